"""X/Y/Z plot axes: refiner steps % (0 = off, so "with vs without" is one grid), checkpoint, score,
the refiner's CFG scale (0 = the generation's), its noise, and a search and replace over the
refiner's prompts (its LoRA tags and their weights included) that works as the host's Prompt S/R
works over the main prompt.

An axis puts its value on the processing object (``p.sdxl_refiner_xyz``); the script reads it
in ``process()`` and hands it to the settings normaliser as overrides, validated like any input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sdxl_refiner.core.errors import Cause, SettingsError
from sdxl_refiner.core.settings import Settings, check_prompt_tags
from sdxl_refiner.host import refusals
from sdxl_refiner.host.callbacks import register_once

XYZ_ATTR = "sdxl_refiner_xyz"
PROMPT_SR_ATTR = "sdxl_refiner_prompt_sr"
AXIS_STEPS_PERCENT = "SDXL Refiner steps %"
AXIS_CHECKPOINT = "SDXL Refiner checkpoint"
AXIS_AESTHETIC_SCORE = "SDXL Refiner aesthetic score"
AXIS_CFG_SCALE = "SDXL Refiner CFG scale"
AXIS_NOISE_MULTIPLIER = "SDXL Refiner noise"
AXIS_PROMPT_SR = "SDXL Refiner prompt S/R"


def overrides(p: object) -> Mapping[str, object]:
    """The X/Y/Z values set on this generation, for settings.from_ui_args(args, overrides=...)."""
    return dict(getattr(p, XYZ_ATTR, None) or {})


def _setter(field: str, **fixed: object) -> Callable[[object, object, Sequence[object]], None]:
    def apply(p: object, value: object, _values: Sequence[object]) -> None:
        # xyz_grid shallow-copies p per cell: replace the dict, never update it in place
        setattr(p, XYZ_ATTR, {**overrides(p), **fixed, field: value})

    return apply


apply_steps_percent = _setter("steps_percent", enabled=True)
apply_checkpoint = _setter("checkpoint", enabled=True)
apply_aesthetic_score = _setter("aesthetic_score")
apply_cfg_scale = _setter("cfg_scale")
apply_noise_multiplier = _setter("noise_multiplier")


def apply_prompt_sr(p: object, value: object, values: Sequence[object]) -> None:
    """As the host's Prompt S/R: the axis' first value is searched for, each cell's value replaces it."""
    setattr(p, PROMPT_SR_ATTR, (str(values[0]), str(value)))


def with_prompt_sr(p: object, settings: Settings) -> Settings:
    """The refiner's prompts with this cell's replacement made; refused, as the host refuses its
    own, when neither holds the searched text."""
    replacement = getattr(p, PROMPT_SR_ATTR, None)
    if replacement is None or settings.refiner_off:
        return settings
    search, value = replacement
    if search not in settings.prompt and search not in settings.negative_prompt:
        raise SettingsError(
            f"SDXL Refiner: X/Y/Z axis '{AXIS_PROMPT_SR}' did not find {search!r} in the refiner prompt or its "
            "negative prompt. Its first value is the text to replace: write it into the refiner prompt.",
        )
    prompt = settings.prompt.replace(search, value)
    negative_prompt = settings.negative_prompt.replace(search, value)
    check_prompt_tags("prompt", prompt)
    check_prompt_tags("negative_prompt", negative_prompt)
    return dataclasses.replace(settings, prompt=prompt, negative_prompt=negative_prompt)


def _number(x: object) -> str:
    number = round(float(x), 8)
    return str(int(number)) if number.is_integer() else str(number)


def _format_saying_what_zero_means(meaning: str) -> Callable[[object, object, object], str]:
    """Grid labels read "20", not the "20.0" of the WebUI's float formatter; 0 says what it means."""

    def format_value(_p: object, opt: object, x: object) -> str:
        return f"{opt.label}: {_number(x)}" + (f" ({meaning})" if float(x) == 0 else "")

    return format_value


format_share = _format_saying_what_zero_means("off")
format_cfg_scale = _format_saying_what_zero_means("the generation's")


def format_score(_p: object, opt: object, x: object) -> str:
    return f"{opt.label}: {_number(x)}"


def checkpoint_titles() -> list[str]:
    from modules import sd_models

    return sorted(sd_models.checkpoints_list, key=str.casefold)


def confirm_checkpoints(_p: object, values: Sequence[object]) -> None:
    """Before the grid starts: every value must name a checkpoint of this WebUI."""
    from modules import sd_models

    for value in values:
        if sd_models.get_closet_checkpoint_match(value) is None:
            raise refusals.answered(SettingsError(
                f"SDXL Refiner: X/Y/Z axis '{AXIS_CHECKPOINT}': {value!r} is not a checkpoint of this WebUI. "
                "Pick values from the axis' dropdown, or refresh the checkpoint list.",
                Cause.NOT_FOUND,
            ))


def find_xyz_grid() -> object | None:
    """The loaded xyz_grid.py module, found through the WebUI's list of loaded scripts."""
    from modules import scripts

    for data in scripts.scripts_data:
        if Path(data.path).name == "xyz_grid.py" and hasattr(data.module, "AxisOption"):
            return data.module
    return None


def register_axes() -> None:
    """on_before_ui: add our axes once, however often the UI is built."""
    xyz_grid = find_xyz_grid()
    if xyz_grid is None:
        print("[SDXL Refiner] the X/Y/Z plot script is not loaded: no SDXL Refiner axes")
        return
    if any(option.label == AXIS_STEPS_PERCENT for option in xyz_grid.axis_options):
        return
    remove_path = getattr(xyz_grid, "format_remove_path", xyz_grid.format_value_add_label)
    xyz_grid.axis_options.extend([
        xyz_grid.AxisOption(AXIS_STEPS_PERCENT, float, apply_steps_percent, format_value=format_share),
        xyz_grid.AxisOption(
            AXIS_CHECKPOINT, str, apply_checkpoint, format_value=remove_path, confirm=confirm_checkpoints,
            cost=1.0, choices=checkpoint_titles,
        ),
        xyz_grid.AxisOption(AXIS_AESTHETIC_SCORE, float, apply_aesthetic_score, format_value=format_score),
        xyz_grid.AxisOption(AXIS_CFG_SCALE, float, apply_cfg_scale, format_value=format_cfg_scale),
        xyz_grid.AxisOption(AXIS_NOISE_MULTIPLIER, float, apply_noise_multiplier, format_value=format_score),
        xyz_grid.AxisOption(AXIS_PROMPT_SR, str, apply_prompt_sr, format_value=xyz_grid.format_value),
    ])


def register_callbacks() -> None:
    from modules import script_callbacks

    register_once(script_callbacks.on_before_ui, register_axes, "sdxl_refiner_xyz_axes")
