"""The refiner's LoRAs in Forge 2 and Neo, through the host's own ``sd_forge_lora`` loader.

The host applies the main prompt's LoRAs by chaining ``networks.load_lora_for_models`` from the
base's original UNet and CLIP patchers: each call returns clones that carry the LoRA's patches,
which the host's memory management merges into the weights when it loads the clone (and takes
out again when it loads a clone without them). The refiner's set goes through the same call,
from the refiner's own patcher and the base's original CLIP: the refiner samples on the returned
UNet clone, and its prompts are encoded with the returned CLIP. The base's patchers are never
handed to the loader, so nothing of the refiner's set reaches the base.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdxl_refiner.host.loras import RefinerLoras, networks_module, unet_layers_in_file, unmatched_note


@dataclass
class LoraPatchers:
    """The refiner's UNet patcher and the CLIP its prompts are encoded with, for one pass."""

    unet: Any
    clip: Any


def with_loras(refiner_patcher, original_clip, loras: RefinerLoras | None) -> LoraPatchers:
    """The refiner's set applied by the host's loader, in the order written; without LoRAs the
    cached refiner patcher itself (nothing to merge, nothing to take out)."""
    if loras is None or not loras.chosen:
        return LoraPatchers(refiner_patcher, original_clip)
    networks = networks_module()
    unet, clip = refiner_patcher, original_clip
    for tag in loras.chosen:
        filename = loras.files[tag.name].filename
        before = unet
        unet, clip = networks.load_lora_for_models(
            unet, clip, networks.load_lora_state_dict(filename), tag.unet, tag.te, filename=filename,
        )
        note = _match_note(tag.name, filename, before, unet)
        if note:
            loras.notes.append(note)
    return LoraPatchers(unet, clip)


def _match_note(name: str, filename: str, before, after) -> str | None:
    """A LoRA whose UNet layers the loader could not all place on the refiner (the loader only logs it)."""
    total = len(unet_layers_in_file(filename))
    if total == 0:
        return None
    counted_before, counted_after = patch_counts(before), patch_counts(after)
    matched = len({key.rsplit(".", 1)[0] for key, count in counted_after.items() if count > counted_before.get(key, 0)})
    return unmatched_note(name, matched, total) if matched < total else None


def patch_counts(patcher) -> dict[str, int]:
    """How many patches each weight of the patcher carries: Forge 2 keeps them per LoRA file
    (``lora_patches``), Neo per weight (ComfyUI's ``patches``)."""
    counts: dict[str, int] = {}
    per_file = getattr(patcher, "lora_patches", None)
    for patches in (per_file.values() if isinstance(per_file, dict) else [getattr(patcher, "patches", {})]):
        for key, listed in patches.items():
            counts[key] = counts.get(key, 0) + len(listed)
    return counts


@contextmanager
def encoding_with(sd_model, clip) -> Iterator[None]:
    """The pass's CLIP for one encoding by the host's prompt machinery, the base's again after it."""
    held = sd_model.forge_objects.clip
    sd_model.forge_objects.clip = clip
    try:
        yield
    finally:
        sd_model.forge_objects.clip = held
