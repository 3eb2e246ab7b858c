"""Which host the extension runs in, decided once where the script loads, by feature detection
rather than version parsing; the rest of the code gets that host's binding."""

from __future__ import annotations

import importlib.util

from sdxl_refiner.host.binding import HostBinding


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def running_in_forge() -> bool:
    """Forge's backend package with its UNet patcher (Forge 2 and Forge Neo both have them)."""
    return _found("modules_forge") and _found("backend.patcher.unet")


def host_binding() -> HostBinding:
    """The binding of the host the extension runs in: Forge 2's where Forge's backend is present,
    else the WebUI's."""
    if running_in_forge():
        from sdxl_refiner.bindings.forge import BINDING
    else:
        from sdxl_refiner.bindings.webui import BINDING
    return BINDING
