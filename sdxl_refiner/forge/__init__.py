"""The Forge 2 binding: the refiner inside Forge's own sampling, through its ``UnetPatcher``.

Forge keeps the WebUI's ``modules`` surface for scripts (the panel, settings, infotext, paste,
API and X/Y/Z code of ``sdxl_refiner.webui`` serve both hosts), but samples through its own
``backend``: only loading the refiner's UNet and joining the sampling differ, and live here.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType


def running_in_forge() -> bool:
    """Feature detection rather than version parsing: Forge's backend package with its UNet patcher."""
    try:
        return (
            importlib.util.find_spec("modules_forge") is not None
            and importlib.util.find_spec("backend.patcher.unet") is not None
        )
    except (ImportError, ValueError):
        return False


def sampling_binding() -> ModuleType:
    """The generation module of the host the extension runs in: Forge's, else the WebUI's. Both
    offer ``register_callbacks``, ``prepare``, ``before_sampling``, ``finish`` and ``unload_refiner``."""
    if running_in_forge():
        from sdxl_refiner.forge import generation
    else:
        from sdxl_refiner.webui import generation
    return generation
