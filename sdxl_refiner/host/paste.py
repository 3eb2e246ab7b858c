"""Paste, "Send to" and the API's ``infotext`` field: our infotext keys back into the panel.

The toggle follows the presence of our keys, as the WebUI's own refiner does with its keys;
the other fields are restored to what the image was made with, defaults included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sdxl_refiner.core.infotext import settings_from_builtin_infotext, settings_from_infotext
from sdxl_refiner.core.settings import BASE_LORAS_LABELS, HIRES_PASS_LABELS
from sdxl_refiner.host import options
from sdxl_refiner.host.ui import Panel

Reader = Callable[[Mapping[str, object]], object]


def pasted_values(params: Mapping[str, object]) -> dict[str, object] | None:
    """Our named values from the pasted parameters, or the built-in refiner's when the user opted in."""
    named = settings_from_infotext(params)
    if named is None and options.import_builtin_infotext():
        named = settings_from_builtin_infotext(params, switch_at_is_a_fraction=options.builtin_switches_by_steps())
    return named


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def listed_checkpoint(name: object) -> str:
    """The checkpoint list's entry for a pasted name; empty when this WebUI has no such checkpoint,
    so that generating says which input to fix instead of refining with another model."""
    from modules import sd_models

    info = sd_models.get_closet_checkpoint_match(name) if isinstance(name, str) and name else None
    if info is None:
        return ""
    # the entry as the dropdown lists it: the title in the WebUI, the file name in Forge 2 and Neo
    for listed, candidate in zip(sd_models.checkpoint_tiles(), sd_models.checkpoints_list.values(), strict=False):
        if candidate is info:
            return listed
    return info.title


def _reader(read: Callable[[dict[str, object]], object]) -> Reader:
    def from_params(params: Mapping[str, object]) -> object:
        named = pasted_values(params)
        return None if named is None else read(named)

    return from_params


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _steps_percent(named: dict[str, object]) -> float | None:
    if (share := _number(named.get("steps_percent"))) is not None:
        return share
    if (start := _number(named.get("start_step_percentage"))) is not None:
        return 100 - start
    return None


def _start_step(named: dict[str, object]) -> int | None:
    value = named.get("start_step", 0)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _hires_pass(named: dict[str, object]) -> str | None:
    return HIRES_PASS_LABELS.get(str(named.get("hires_pass", "default")))


def _base_loras(named: dict[str, object]) -> str | None:
    return BASE_LORAS_LABELS.get(str(named.get("base_loras", "none")))


def paste_fields(panel: Panel) -> list[tuple[object, Reader]]:
    """Script.infotext_fields for one tab's panel."""
    try:
        from modules.infotext_utils import PasteField
    except ImportError:  # WebUI before 1.8: plain tuples do the same
        def PasteField(component: object, target: Reader) -> tuple[object, Reader]:
            return (component, target)

    readers: list[tuple[object, Reader]] = [
        (panel.enabled, lambda params: pasted_values(params) is not None),
        (panel.checkpoint, _reader(lambda named: listed_checkpoint(named.get("checkpoint")))),
        (panel.steps_percent, _reader(_steps_percent)),
        (panel.aesthetic_score, _reader(lambda named: _number(named.get("aesthetic_score")))),
        (panel.negative_aesthetic_score, _reader(lambda named: _number(named.get("negative_aesthetic_score")))),
        (panel.start_step, _reader(_start_step)),
        (panel.hires_pass, _reader(_hires_pass)),
        (panel.prompt, _reader(lambda named: _text(named.get("prompt")))),
        (panel.negative_prompt, _reader(lambda named: _text(named.get("negative_prompt")))),
        (panel.cfg_scale, _reader(lambda named: _number(named.get("cfg_scale")))),
        (panel.noise_multiplier, _reader(lambda named: _number(named.get("noise_multiplier")))),
        (panel.base_loras, _reader(_base_loras)),
    ]
    return [PasteField(component, reader) for component, reader in readers]
