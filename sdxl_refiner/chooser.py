"""Which host the extension runs in, decided once where the script loads, by feature detection
rather than version parsing; the rest of the code gets that host's binding."""

from __future__ import annotations

import importlib.util
import inspect

from sdxl_refiner.host.binding import HostBinding


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def running_in_forge() -> bool:
    """Forge's backend package with its UNet patcher (Forge 2 and Forge Neo both have them)."""
    return _found("modules_forge") and _found("backend.patcher.unet")


def prompt_parser_takes_scheduling_option() -> bool:
    """WebUI 1.10 and Forge 2 pass their "old prompt editing timelines" option to the prompt parser;
    Forge Neo dropped the option and the argument."""
    from modules import prompt_parser

    return "use_old_scheduling" in inspect.signature(prompt_parser.get_multicond_learned_conditioning).parameters


def host_binding() -> HostBinding:
    """The binding of the host the extension runs in: with Forge's backend, Forge 2's or Forge
    Neo's (told apart by what differs between them), else the WebUI's."""
    if not running_in_forge():
        from sdxl_refiner.bindings.webui import BINDING
    elif prompt_parser_takes_scheduling_option():
        from sdxl_refiner.bindings.forge import BINDING
    else:
        from sdxl_refiner.bindings.neo import BINDING
    return BINDING
