"""The PNG infotext: what we write, and how a pasted infotext becomes settings again.

Every key starts with "SDXL Refiner" so that pasting never turns on the WebUI's built-in refiner,
whose keys are "Refiner" and "Refiner switch at". The WebUI quotes values that hold commas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sdxl_refiner.core.settings import (
    DEFAULT_AESTHETIC_SCORE,
    DEFAULT_NEGATIVE_AESTHETIC_SCORE,
    DEFAULT_NOISE_MULTIPLIER,
    Settings,
)

if TYPE_CHECKING:
    from sdxl_refiner.core.schedule import SwitchPlan

KEY_CHECKPOINT = "SDXL Refiner"
KEY_STEPS_PERCENT = "SDXL Refiner steps"
KEY_START_STEP = "SDXL Refiner start step"
KEY_START_STEP_PERCENTAGE = "SDXL Refiner start at"
KEY_SPLIT = "SDXL Refiner split"
KEY_HIRES_SPLIT = "SDXL Refiner hires split"
KEY_AESTHETIC_SCORE = "SDXL Refiner aesthetic score"
KEY_NEGATIVE_AESTHETIC_SCORE = "SDXL Refiner negative aesthetic score"
KEY_HIRES_PASS = "SDXL Refiner hires pass"
KEY_PROMPT = "SDXL Refiner prompt"
KEY_NEGATIVE_PROMPT = "SDXL Refiner negative prompt"
KEY_CFG_SCALE = "SDXL Refiner CFG scale"
KEY_NOISE_MULTIPLIER = "SDXL Refiner noise"
KEY_BASE_LORAS = "SDXL Refiner base LoRAs"
KEY_NOTES = "SDXL Refiner notes"

BUILTIN_KEY_CHECKPOINT = "Refiner"
BUILTIN_KEY_SWITCH_AT = "Refiner switch at"

_PERCENT_KEYS = {KEY_STEPS_PERCENT: "steps_percent", KEY_START_STEP_PERCENTAGE: "start_step_percentage"}
_NUMBER_KEYS = {
    KEY_AESTHETIC_SCORE: "aesthetic_score",
    KEY_NEGATIVE_AESTHETIC_SCORE: "negative_aesthetic_score",
    KEY_CFG_SCALE: "cfg_scale",
    KEY_NOISE_MULTIPLIER: "noise_multiplier",
}


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float, without a needless ".0"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def infotext_params(
    settings: Settings, *, checkpoint_title: str, plan: SwitchPlan | None, hires_pass_run: bool = False
) -> dict[str, str]:
    """Keys to add to the image's parameters; empty when the refiner changed nothing.

    Hires fix's second pass writes its split under its own key, so that with both passes
    refined the image tells what each of them did.
    """
    if settings.refiner_off or (plan is not None and not plan.active):
        return {}
    params = {KEY_CHECKPOINT: checkpoint_title}
    if settings.steps_percent is not None:
        params[KEY_STEPS_PERCENT] = f"{format_number(settings.steps_percent)}%"
    elif settings.start_step is not None:
        params[KEY_START_STEP] = str(settings.start_step)
    elif settings.start_step_percentage is not None:
        params[KEY_START_STEP_PERCENTAGE] = f"{format_number(settings.start_step_percentage)}%"
    if plan is not None:
        split_key = KEY_HIRES_SPLIT if hires_pass_run else KEY_SPLIT
        params[split_key] = f"base {plan.base_steps} / refiner {plan.refiner_steps}"
    if settings.aesthetic_score != DEFAULT_AESTHETIC_SCORE:
        params[KEY_AESTHETIC_SCORE] = format_number(settings.aesthetic_score)
    if settings.negative_aesthetic_score != DEFAULT_NEGATIVE_AESTHETIC_SCORE:
        params[KEY_NEGATIVE_AESTHETIC_SCORE] = format_number(settings.negative_aesthetic_score)
    if settings.hires_pass != "default":
        params[KEY_HIRES_PASS] = settings.hires_pass
    if settings.prompt:
        params[KEY_PROMPT] = settings.prompt
    if settings.negative_prompt:
        params[KEY_NEGATIVE_PROMPT] = settings.negative_prompt
    if settings.cfg_scale:
        params[KEY_CFG_SCALE] = format_number(settings.cfg_scale)
    if settings.noise_multiplier != DEFAULT_NOISE_MULTIPLIER:
        params[KEY_NOISE_MULTIPLIER] = format_number(settings.noise_multiplier)
    if settings.base_loras != "none":
        params[KEY_BASE_LORAS] = settings.base_loras
    if plan is not None and plan.notes:
        params[KEY_NOTES] = "; ".join(plan.notes)
    return params


def joined_notes(existing: object, notes: Sequence[str]) -> str:
    """Notes already in the infotext followed by new ones, each once (hires fix writes twice)."""
    text = str(existing) if existing else ""
    for note in notes:
        if note and f"; {note}; " not in f"; {text}; ":
            text = f"{text}; {note}" if text else note
    return text


def _read_number(text: object, *, percent: bool) -> object:
    """A number when the text is one; otherwise the text, so the normaliser names it in its message."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if percent:
        stripped = stripped.removesuffix("%").strip()
    try:
        return float(stripped)
    except ValueError:
        return text


def _read_integer(text: object) -> object:
    number = _read_number(text, percent=False)
    return int(number) if isinstance(number, float) and number.is_integer() else number


def settings_from_infotext(params: Mapping[str, object]) -> dict[str, object] | None:
    """Named values for :func:`sdxl_refiner.core.settings.from_named`; None when none of our keys is there.

    Absent optional keys come back as their fixed defaults, so a paste restores every field
    rather than leaving what the panel held before. The splits and notes describe what ran and
    are not settings: they are read past.
    """
    ours = {key: value for key, value in params.items() if isinstance(key, str) and key.startswith(KEY_CHECKPOINT)}
    if not ours:
        return None
    named: dict[str, object] = {
        "enabled": True,
        "checkpoint": ours.get(KEY_CHECKPOINT, ""),
        "aesthetic_score": DEFAULT_AESTHETIC_SCORE,
        "negative_aesthetic_score": DEFAULT_NEGATIVE_AESTHETIC_SCORE,
        "hires_pass": ours.get(KEY_HIRES_PASS, "default"),
        "prompt": ours.get(KEY_PROMPT, ""),
        "negative_prompt": ours.get(KEY_NEGATIVE_PROMPT, ""),
        "cfg_scale": 0.0,
        "noise_multiplier": DEFAULT_NOISE_MULTIPLIER,
        "base_loras": ours.get(KEY_BASE_LORAS, "none"),
    }
    for key, name in _PERCENT_KEYS.items():
        if key in ours:
            named[name] = _read_number(ours[key], percent=True)
    if KEY_START_STEP in ours:
        named["start_step"] = _read_integer(ours[KEY_START_STEP])
    for key, name in _NUMBER_KEYS.items():
        if key in ours:
            named[name] = _read_number(ours[key], percent=False)
    return named


def settings_from_builtin_infotext(
    params: Mapping[str, object], *, switch_at_is_a_fraction: bool = True
) -> dict[str, object] | None:
    """The built-in refiner's keys as our named values, for users who opt in to the import.

    The built-in switches at a fraction of the schedule, which is closest to our
    ``start_step_percentage``; with its default timestep switch the steps may differ by one. A host
    whose built-in refiner writes a sigma there (Forge Neo, unless told to switch by steps) gives
    no share to import: the refiner alone is taken.
    """
    if settings_from_infotext(params) is not None or BUILTIN_KEY_CHECKPOINT not in params:
        return None
    named: dict[str, object] = {"enabled": True, "checkpoint": params[BUILTIN_KEY_CHECKPOINT]}
    if not switch_at_is_a_fraction:
        return named
    switch_at = _read_number(params.get(BUILTIN_KEY_SWITCH_AT, "0.8"), percent=False)
    if isinstance(switch_at, float) and 0 <= switch_at <= 1:
        named["start_step_percentage"] = round(switch_at * 100, 6)
    return named
