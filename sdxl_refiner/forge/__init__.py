"""The Forge 2 binding: the refiner inside Forge's own sampling, through its ``UnetPatcher``.

Forge keeps the WebUI's ``modules`` surface for scripts (the panel, settings, infotext, paste,
API and X/Y/Z code of ``sdxl_refiner.webui`` serve both hosts), but samples through its own
``backend``: only loading the refiner's UNet and joining the sampling differ, and live here.
"""

from __future__ import annotations

import importlib.util


def running_in_forge() -> bool:
    """Feature detection rather than version parsing: Forge's backend package with its UNet patcher."""
    try:
        return (
            importlib.util.find_spec("modules_forge") is not None
            and importlib.util.find_spec("backend.patcher.unet") is not None
        )
    except (ImportError, ValueError):
        return False
