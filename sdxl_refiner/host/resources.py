"""What one host process keeps between generations: the refiner UNet cache, the text-encoder
comparisons already made and the refiner's own text encoder.

It lives on the host's model holder (``sd_models.model_data``), so it is one per process and goes
away with the host, without a module global of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sdxl_refiner.core.residency import RefinerCache
from sdxl_refiner.host import options

RESOURCES_ATTRIBUTE = "sdxl_refiner_resources"


@dataclass
class RefinerResources:
    cache: RefinerCache
    encoder_checks: dict[tuple, bool] = field(default_factory=dict)
    own_encoders: dict = field(default_factory=dict)


def unload_cached_refiners() -> list[str]:
    """Drops the cached refiner UNets, says in the console what that freed, and names their files."""
    cache = resources().cache
    held = cache.memory_by_device()
    names = [identity.path.name for identity in cache.unload()]
    freed = ", ".join(f"{size / 2**30:.2f} GiB on {device}" for device, size in sorted(held.items()))
    print(f"SDXL Refiner: unloaded {', '.join(names) or 'no refiner'}" + (f" ({freed})" if freed else ""))
    return names


def resources() -> RefinerResources:
    from modules import sd_models

    holder = sd_models.model_data
    found = getattr(holder, RESOURCES_ATTRIBUTE, None)
    if found is None:
        found = RefinerResources(RefinerCache(options.cache_capacity()))
        setattr(holder, RESOURCES_ATTRIBUTE, found)
    else:
        found.cache.capacity = options.cache_capacity()
    return found
