"""One validated, immutable settings object, whatever the source (UI, API, X/Y/Z, infotext).

Every way in ends in :func:`from_named`, so a value refused from the API is refused with the
same words from an infotext paste or an X/Y/Z axis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.loras import refuse_any_tag, split_loras

HiresPass = Literal["default", "first", "second", "both"]
BaseLoras = Literal["none", "same"]

DEFAULT_STEPS_PERCENT = 20.0
DEFAULT_AESTHETIC_SCORE = 6.0
DEFAULT_NEGATIVE_AESTHETIC_SCORE = 2.5
AESTHETIC_SCORE_RANGE = (0.0, 10.0)
# 0 is "the generation's own CFG"; the top is the WebUI's own CFG slider's
CFG_SCALE_RANGE = (0.0, 30.0)
DEFAULT_NOISE_MULTIPLIER = 1.0
NOISE_MULTIPLIER_RANGE = (0.0, 1.5)

UI_ARG_ORDER = (
    "enabled",
    "checkpoint",
    "steps_percent",
    "aesthetic_score",
    "negative_aesthetic_score",
    "start_step",
    "hires_pass",
    "prompt",
    "negative_prompt",
    "cfg_scale",
    "noise_multiplier",
    "base_loras",
)
STEP_FIELDS = ("steps_percent", "start_step", "start_step_percentage")
HIRES_PASS_LABELS: dict[str, str] = {
    "default": "Default (from settings)",
    "first": "First pass",
    "second": "Second pass",
    "both": "Both passes",
}
BASE_LORAS_LABELS: dict[str, str] = {
    "none": "Not on the refiner",
    "same": "Also on the refiner",
}


@dataclass(frozen=True)
class Settings:
    """What the user asked for. Exactly one of the three step fields is set when enabled.

    ``steps_percent``: share of the steps the refiner runs (0-100).
    ``start_step``: number of base steps (the refiner starts at step ``start_step + 1``, 1-based).
    ``start_step_percentage``: share of steps done by the base before the refiner starts (0-100).
    ``hires_pass``: which hires-fix pass gets the refiner; "default" follows the settings page.
    ``prompt``, ``negative_prompt``: the refiner's own texts; empty means the generation's.
    ``cfg_scale``: CFG scale of every model call from the switch on; 0 means the generation's.
    ``noise_multiplier``: scales the fresh noise ancestral and SDE samplers add on the refiner's
    steps (k-diffusion's ``s_noise`` for those steps alone); 1 leaves it unchanged.
    ``base_loras``: whether the main prompt's LoRAs also apply to the refiner ("same") or not
    ("none"); the refiner prompt's own LoRA tags apply to the refiner either way.
    """

    enabled: bool = False
    checkpoint: str = ""
    steps_percent: float | None = DEFAULT_STEPS_PERCENT
    start_step: int | None = None
    start_step_percentage: float | None = None
    aesthetic_score: float = DEFAULT_AESTHETIC_SCORE
    negative_aesthetic_score: float = DEFAULT_NEGATIVE_AESTHETIC_SCORE
    hires_pass: HiresPass = "default"
    prompt: str = ""
    negative_prompt: str = ""
    cfg_scale: float = 0.0
    noise_multiplier: float = DEFAULT_NOISE_MULTIPLIER
    base_loras: BaseLoras = "none"

    @property
    def refiner_off(self) -> bool:
        """True when nothing may change: toggle off, or an explicit share of 0 %."""
        return not self.enabled or self.steps_percent == 0


FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Settings))


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _fail(field: str, value: object, allowed: str, fix: str) -> SettingsError:
    return SettingsError(f"SDXL Refiner: '{field}' must be {allowed}; got {_describe(value)}. {fix}")


def _boolean(field: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(field, value, "true or false", "Send a JSON boolean, not a string or number.")


def _number(field: str, value: object, low: float, high: float, example: str) -> float:
    allowed = f"a number from {low:g} to {high:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(field, value, allowed, f"Send a number such as {example}.")
    number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise _fail(field, value, allowed, f"Use a value from {low:g} to {high:g}, such as {example}.")
    return number


def _start_step(value: object) -> int:
    allowed = "a whole number of base steps, 0 or more"
    fix = "Send an integer such as 24 (the refiner then starts at step 25)."
    whole = int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(whole, bool) or not isinstance(whole, int) or whole < 0:
        raise _fail("start_step", value, allowed, fix)
    return int(whole)


def _checkpoint(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(
            "checkpoint", value, "a checkpoint name (text)", "Send a title from /sdapi/v1/sd-models."
        )
    return value.strip()


def _prompt(field: str, value: object) -> str:
    """Text as the user wrote it, LoRA tags included; only blank means "the generation's own"."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(field, value, "text", "Send a string; an empty one uses the generation's own.")
    check_prompt_tags(field, value)
    return value if value.strip() else ""


def check_prompt_tags(field: str, text: str) -> None:
    """The refiner prompt's LoRA tags must read; its negative prompt takes none."""
    if field == "negative_prompt":
        refuse_any_tag(field, text)
    else:
        split_loras(field, text)


def _labelled(field: str, value: object, labels: Mapping[str, str], allowed: str, fix: str) -> str:
    """A choice given by its name or by its label in the panel, in any case."""
    if isinstance(value, str):
        wanted = value.strip().lower()
        for name, label in labels.items():
            if wanted in (name, label.lower()):
                return name
    raise _fail(field, value, allowed, fix)


def _base_loras(value: object) -> BaseLoras:
    return _labelled(  # type: ignore[return-value]
        "base_loras", value, BASE_LORAS_LABELS, "'none' or 'same'",
        "'same' also applies the main prompt's LoRAs to the refiner; 'none' keeps them off it.",
    )


def _hires_pass(value: object) -> HiresPass:
    allowed = "one of " + ", ".join(f"'{name}'" for name in HIRES_PASS_LABELS)
    return _labelled(  # type: ignore[return-value]
        "hires_pass", value, HIRES_PASS_LABELS, allowed, "'default' follows Settings → SDXL Refiner.",
    )


def _refuse_unknown(keys: object) -> None:
    unknown = [key for key in keys if key not in FIELD_NAMES]  # type: ignore[attr-defined]
    if unknown:
        raise SettingsError(
            f"SDXL Refiner: unknown argument {unknown[0]!r}; the allowed names are "
            f"{', '.join(FIELD_NAMES)}. Check the spelling."
        )


def _step_fields(values: Mapping[str, object]) -> dict[str, object]:
    given = {name: values[name] for name in STEP_FIELDS if values.get(name) is not None}
    if len(given) > 1:
        shown = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise SettingsError(
            f"SDXL Refiner: give only one of 'steps_percent', 'start_step', 'start_step_percentage'; "
            f"got {shown}. Remove all but one."
        )
    if not given:
        return {"steps_percent": DEFAULT_STEPS_PERCENT, "start_step": None, "start_step_percentage": None}
    name, value = next(iter(given.items()))
    fields: dict[str, object] = dict.fromkeys(STEP_FIELDS)
    if name == "start_step":
        fields[name] = _start_step(value)
    else:
        fields[name] = _number(name, value, 0.0, 100.0, "20" if name == "steps_percent" else "80")
    return fields


def from_named(values: Mapping[str, object]) -> Settings:
    """Build Settings from named values (the API's dict, infotext, X/Y/Z); unknown keys are refused.

    Absent or ``None`` values take the defaults, so an API caller sends only what it changes;
    an absent ``enabled`` means on, since sending the values at all is asking for the refiner.
    """
    if not isinstance(values, Mapping):
        raise _fail("args", values, "a dict of named arguments", "Send an object such as {\"enabled\": true}.")
    _refuse_unknown(values.keys())
    defaults = Settings()

    def given(name: str) -> object:
        value = values.get(name)
        return getattr(defaults, name) if value is None else value

    settings = Settings(
        enabled=_boolean("enabled", True if values.get("enabled") is None else values["enabled"]),
        checkpoint=_checkpoint(values.get("checkpoint")),
        aesthetic_score=_number("aesthetic_score", given("aesthetic_score"), *AESTHETIC_SCORE_RANGE, "6"),
        negative_aesthetic_score=_number(
            "negative_aesthetic_score", given("negative_aesthetic_score"), *AESTHETIC_SCORE_RANGE, "2.5"
        ),
        hires_pass=_hires_pass(given("hires_pass")),
        prompt=_prompt("prompt", values.get("prompt")),
        negative_prompt=_prompt("negative_prompt", values.get("negative_prompt")),
        cfg_scale=_number("cfg_scale", given("cfg_scale"), *CFG_SCALE_RANGE, "5"),
        noise_multiplier=_number("noise_multiplier", given("noise_multiplier"), *NOISE_MULTIPLIER_RANGE, "0.9"),
        base_loras=_base_loras(given("base_loras")),
        **_step_fields(values),  # type: ignore[arg-type]
    )
    if not settings.refiner_off and not settings.checkpoint:
        raise SettingsError(
            "SDXL Refiner: 'checkpoint' is empty while the refiner is enabled. Choose a refiner "
            "checkpoint (a title from /sdapi/v1/sd-models), or turn the refiner off."
        )
    return settings


def named_from_ui_args(args: Sequence[object]) -> dict[str, object]:
    """Positional args in UI order -> named values; the UI's start step 0 means "use the %"."""
    if len(args) > len(UI_ARG_ORDER):
        raise SettingsError(
            f"SDXL Refiner: got {len(args)} positional arguments; at most {len(UI_ARG_ORDER)} are "
            f"allowed, in this order: {', '.join(UI_ARG_ORDER)}. Remove the extra ones, or send one "
            "dict of named arguments."
        )
    named = dict(zip(UI_ARG_ORDER[: len(args)], args, strict=True))
    if named.get("enabled") is None:
        named["enabled"] = False
    start_step = named.get("start_step")
    if start_step is None or (start_step == 0 and not isinstance(start_step, bool)):
        named.pop("start_step", None)
    elif "steps_percent" in named:
        named.pop("steps_percent")
    return named


def _merge(named: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    merged = dict(named)
    if any(overrides.get(name) is not None for name in STEP_FIELDS):
        for name in STEP_FIELDS:
            merged.pop(name, None)
    merged.update(overrides)
    return merged


def from_ui_args(args: Sequence[object], overrides: Mapping[str, object] | None = None) -> Settings:
    """Script args -> Settings: positional in UI_ARG_ORDER, or one dict of named args first
    (any args after the dict are ignored).

    ``overrides`` (X/Y/Z values) are applied before validation, so an axis can supply what the
    panel lacks, e.g. a checkpoint. A step field among them replaces the panel's step field.
    """
    args = tuple(args)
    # the WebUI's API fills the positions after a dict with the panel's defaults: not the caller's
    named = dict(args[0]) if args and isinstance(args[0], Mapping) else named_from_ui_args(args)
    return from_named(_merge(named, overrides or {}))

