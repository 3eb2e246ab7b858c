"""The settings normaliser: every source (UI, API, X/Y/Z) gives the same Settings or the same message."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.settings import (
    FIELD_NAMES,
    HIRES_PASS_LABELS,
    STEP_FIELDS,
    UI_ARG_ORDER,
    Settings,
    from_named,
    from_ui_args,
)

CKPT = "sd_xl_refiner_1.0.safetensors [7440042bbd]"


def with_overrides(settings: Settings, **changes: object) -> Settings:
    """X/Y/Z values over settings given as one dict, the way the script hands them to the normaliser."""
    return from_ui_args([dataclasses.asdict(settings)], overrides=changes)
ON = Settings(enabled=True, checkpoint=CKPT)

ACCEPTED = [
    ("ui: all seven, start step 0 uses the %", [True, CKPT, 25, 6.0, 2.5, 0, "Default (from settings)"],
     dataclasses.replace(ON, steps_percent=25.0)),
    ("ui: start step above 0 overrides the %", [True, CKPT, 25, 6.0, 2.5, 24, "Second pass"],
     dataclasses.replace(ON, steps_percent=None, start_step=24, hires_pass="second")),
    ("ui: float start step from a Number box", [True, CKPT, 25, 7, 3, 24.0, "Both passes"],
     dataclasses.replace(ON, steps_percent=None, start_step=24, aesthetic_score=7.0,
                         negative_aesthetic_score=3.0, hires_pass="both")),
    ("ui: missing tail takes defaults", [True, CKPT], ON),
    ("ui: all eleven, the refiner's own prompts, CFG and noise",
     [True, CKPT, 20, 6, 2.5, 0, "default", "film grain, pores", "blur", 4.5, 0.75],
     dataclasses.replace(ON, prompt="film grain, pores", negative_prompt="blur", cfg_scale=4.5, noise_multiplier=0.75)),
    ("ui: a prompt keeps its spacing; a blank one is the generation's", [True, CKPT, 20, 6, 2.5, 0, "default",
     " grain\n", " \n"], dataclasses.replace(ON, prompt=" grain\n")),
    ("api dict: the ends of the ranges", [{"checkpoint": CKPT, "cfg_scale": 30, "noise_multiplier": 0}],
     dataclasses.replace(ON, cfg_scale=30.0, noise_multiplier=0.0)),
    ("api dict: the top of the noise range", [{"checkpoint": CKPT, "noise_multiplier": 1.5}],
     dataclasses.replace(ON, noise_multiplier=1.5)),
    ("api dict: angle brackets that are no tag", [{"checkpoint": CKPT, "prompt": "a <b> c :1.1 <x y:z>"}],
     dataclasses.replace(ON, prompt="a <b> c :1.1 <x y:z>")),
    ("ui: all twelve, the main prompt's LoRAs on the refiner",
     [True, CKPT, 20, 6, 2.5, 0, "default", "grain <lora:detail:0.6>", "", 0, 1, "Also on the refiner"],
     dataclasses.replace(ON, prompt="grain <lora:detail:0.6>", base_loras="same")),
    ("api dict: LoRA tags with named weights and the lyco name",
     [{"checkpoint": CKPT, "prompt": "<lora:a:unet=0.5:te=0> <lyco:b:1:0.2:8>", "base_loras": "none"}],
     dataclasses.replace(ON, prompt="<lora:a:unet=0.5:te=0> <lyco:b:1:0.2:8>")),
    ("ui: no args at all is off", [], Settings()),
    ("ui: off with no checkpoint is fine", [False, None, 20], Settings()),
    ("ui: on with 0 % needs no checkpoint", [True, "", 0], Settings(enabled=True, steps_percent=0.0)),
    ("api dict: named args", [{"enabled": True, "checkpoint": CKPT, "steps_percent": 25}],
     dataclasses.replace(ON, steps_percent=25.0)),
    ("api dict: enabled absent means on", [{"checkpoint": CKPT}], ON),
    ("api dict: start_step", [{"checkpoint": CKPT, "start_step": 0}],
     dataclasses.replace(ON, steps_percent=None, start_step=0)),
    ("api dict: start_step_percentage", [{"checkpoint": CKPT, "start_step_percentage": 90}],
     dataclasses.replace(ON, steps_percent=None, start_step_percentage=90.0)),
    ("api dict: null step fields are absent", [{"checkpoint": CKPT, "steps_percent": None, "start_step": 7}],
     dataclasses.replace(ON, steps_percent=None, start_step=7)),
    ("api dict: hires pass by name", [{"checkpoint": CKPT, "hires_pass": "first"}],
     dataclasses.replace(ON, hires_pass="first")),
    ("api dict: checkpoint is trimmed", [{"checkpoint": f"  {CKPT} "}], ON),
    ("api dict: 100 % is allowed", [{"checkpoint": CKPT, "steps_percent": 100}],
     dataclasses.replace(ON, steps_percent=100.0)),
    ("api dict: the panel defaults the WebUI appends are ignored",
     [{"checkpoint": CKPT, "start_step": 10}, "", 20.0, 6.0, 2.5, 0, "Default (from settings)"],
     dataclasses.replace(ON, steps_percent=None, start_step=10)),
]

REFUSED = [
    ("bool is not a number", [{"checkpoint": CKPT, "steps_percent": True}],
     "SDXL Refiner: 'steps_percent' must be a number from 0 to 100; got True (bool). Send a number such as 20."),
    ("text is not a number", [{"checkpoint": CKPT, "steps_percent": "abc"}],
     "SDXL Refiner: 'steps_percent' must be a number from 0 to 100; got 'abc' (str). Send a number such as 20."),
    ("nan", [{"checkpoint": CKPT, "steps_percent": math.nan}],
     "SDXL Refiner: 'steps_percent' must be a number from 0 to 100; got nan (float). "
     "Use a value from 0 to 100, such as 20."),
    ("inf", [True, CKPT, 20, math.inf],
     "SDXL Refiner: 'aesthetic_score' must be a number from 0 to 10; got inf (float). "
     "Use a value from 0 to 10, such as 6."),
    ("above 100", [{"checkpoint": CKPT, "start_step_percentage": 150}],
     "SDXL Refiner: 'start_step_percentage' must be a number from 0 to 100; got 150 (int). "
     "Use a value from 0 to 100, such as 80."),
    ("below 0", [True, CKPT, -5],
     "SDXL Refiner: 'steps_percent' must be a number from 0 to 100; got -5 (int). "
     "Use a value from 0 to 100, such as 20."),
    ("an integer too large for a float", [{"checkpoint": CKPT, "steps_percent": 10**400}],
     f"SDXL Refiner: 'steps_percent' must be a number from 0 to 100; got {10**400!r} (int). "
     "Use a value from 0 to 100, such as 20."),
    ("negative aesthetic score out of range", [True, CKPT, 20, 6, 11],
     "SDXL Refiner: 'negative_aesthetic_score' must be a number from 0 to 10; got 11 (int). "
     "Use a value from 0 to 10, such as 2.5."),
    ("fractional start step", [{"checkpoint": CKPT, "start_step": 2.5}],
     "SDXL Refiner: 'start_step' must be a whole number of base steps, 0 or more; got 2.5 (float). "
     "Send an integer such as 24 (the refiner then starts at step 25)."),
    ("negative start step", [True, CKPT, 20, 6, 2.5, -1],
     "SDXL Refiner: 'start_step' must be a whole number of base steps, 0 or more; got -1 (int). "
     "Send an integer such as 24 (the refiner then starts at step 25)."),
    ("start step as text", [{"checkpoint": CKPT, "start_step": "24"}],
     "SDXL Refiner: 'start_step' must be a whole number of base steps, 0 or more; got '24' (str). "
     "Send an integer such as 24 (the refiner then starts at step 25)."),
    ("two step fields", [{"checkpoint": CKPT, "steps_percent": 25, "start_step": 10}],
     "SDXL Refiner: give only one of 'steps_percent', 'start_step', 'start_step_percentage'; "
     "got steps_percent=25, start_step=10. Remove all but one."),
    ("unknown key", [{"checkpoint": CKPT, "steps_percentage": 25}],
     "SDXL Refiner: unknown argument 'steps_percentage'; the allowed names are enabled, checkpoint, "
     "steps_percent, start_step, start_step_percentage, aesthetic_score, negative_aesthetic_score, "
     "hires_pass, prompt, negative_prompt, cfg_scale, noise_multiplier, base_loras. Check the spelling."),
    ("bad hires pass", [{"checkpoint": CKPT, "hires_pass": "third"}],
     "SDXL Refiner: 'hires_pass' must be one of 'default', 'first', 'second', 'both'; got 'third' (str). "
     "'default' follows Settings → SDXL Refiner."),
    ("enabled as text", [{"enabled": "yes", "checkpoint": CKPT}],
     "SDXL Refiner: 'enabled' must be true or false; got 'yes' (str). "
     "Send a JSON boolean, not a string or number."),
    ("enabled as number", [1, CKPT],
     "SDXL Refiner: 'enabled' must be true or false; got 1 (int). Send a JSON boolean, not a string or number."),
    ("checkpoint as number", [{"checkpoint": 5}],
     "SDXL Refiner: 'checkpoint' must be a checkpoint name (text); got 5 (int). "
     "Send a title from /sdapi/v1/sd-models."),
    ("on without checkpoint", [True, "", 20],
     "SDXL Refiner: 'checkpoint' is empty while the refiner is enabled. Choose a refiner checkpoint "
     "(a title from /sdapi/v1/sd-models), or turn the refiner off."),
    ("too many positional args", [True, CKPT, 20, 6, 2.5, 0, "default", "", "", 0, 1, "none", "extra"],
     "SDXL Refiner: got 13 positional arguments; at most 12 are allowed, in this order: enabled, checkpoint, "
     "steps_percent, aesthetic_score, negative_aesthetic_score, start_step, hires_pass, prompt, negative_prompt, "
     "cfg_scale, noise_multiplier, base_loras. Remove the extra ones, or send one dict of named arguments."),
    ("prompt as a number", [{"checkpoint": CKPT, "prompt": 5}],
     "SDXL Refiner: 'prompt' must be text; got 5 (int). Send a string; an empty one uses the generation's own."),
    ("hypernetwork tag in the refiner prompt", [{"checkpoint": CKPT, "prompt": "film grain <hypernet:grain:0.7>"}],
     "SDXL Refiner: 'prompt' holds '<hypernet:grain:0.7>': the refiner takes LoRAs (<lora:...>), not the extra "
     "network type 'hypernet'. Remove the tag; in the main prompt it still applies to the base."),
    ("LoRA weight that is not a number", [{"checkpoint": CKPT, "prompt": "grain <lora:grain:strong>"}],
     "SDXL Refiner: 'prompt' holds '<lora:grain:strong>': its text-encoder weight 'strong' is not a number. "
     "Write a number, such as <lora:name:0.8>."),
    ("LoRA UNet weight that is not a number", [{"checkpoint": CKPT, "prompt": "<lyco:grain:unet=nan>"}],
     "SDXL Refiner: 'prompt' holds '<lyco:grain:unet=nan>': its UNet weight 'nan' is not a number. "
     "Write a number, such as <lora:name:0.8>."),
    ("LoRA dynamic dimension that is not whole", [{"checkpoint": CKPT, "prompt": "<lora:grain:1:1:dyn=1.5>"}],
     "SDXL Refiner: 'prompt' holds '<lora:grain:1:1:dyn=1.5>': its dynamic dimension '1.5' is not a whole "
     "number. Write a whole number, such as dyn=16, or leave it out."),
    ("LoRA tag without a name", [{"checkpoint": CKPT, "prompt": "<lora: :1>"}],
     "SDXL Refiner: 'prompt' holds '<lora: :1>': it names no LoRA. Write the LoRA's name, such as "
     "<lora:name:0.8>."),
    ("LoRA tag in the refiner negative prompt", [True, CKPT, 20, 6, 2.5, 0, "default", "", "<lora:x:1>"],
     "SDXL Refiner: 'negative_prompt' holds '<lora:x:1>': a negative prompt takes no extra network. "
     "Write LoRA tags in the refiner prompt; any other tag in the main prompt."),
    ("base LoRAs neither none nor same", [{"checkpoint": CKPT, "base_loras": "all"}],
     "SDXL Refiner: 'base_loras' must be 'none' or 'same'; got 'all' (str). 'same' also applies the main "
     "prompt's LoRAs to the refiner; 'none' keeps them off it."),
    ("CFG above the slider", [{"checkpoint": CKPT, "cfg_scale": 30.5}],
     "SDXL Refiner: 'cfg_scale' must be a number from 0 to 30; got 30.5 (float). "
     "Use a value from 0 to 30, such as 5."),
    ("CFG as text", [{"checkpoint": CKPT, "cfg_scale": "5"}],
     "SDXL Refiner: 'cfg_scale' must be a number from 0 to 30; got '5' (str). Send a number such as 5."),
    ("noise above 1.5", [{"checkpoint": CKPT, "noise_multiplier": 1.6}],
     "SDXL Refiner: 'noise_multiplier' must be a number from 0 to 1.5; got 1.6 (float). "
     "Use a value from 0 to 1.5, such as 0.9."),
]


@pytest.mark.parametrize(("case", "args", "expected"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_inputs_give_these_settings(case: str, args: list, expected: Settings) -> None:
    assert from_ui_args(args) == expected


@pytest.mark.parametrize(("case", "args", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_inputs_give_this_exact_message(case: str, args: list, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        from_ui_args(args)
    assert str(caught.value) == message


def test_ui_arg_order_names_settings_fields_and_two_step_fields() -> None:
    assert set(UI_ARG_ORDER) <= set(FIELD_NAMES)
    assert set(FIELD_NAMES) - set(UI_ARG_ORDER) == {"start_step_percentage"}


def test_every_hires_pass_label_maps_to_its_value() -> None:
    for value, label in HIRES_PASS_LABELS.items():
        assert from_ui_args([False, "", 20, 6, 2.5, 0, label]).hires_pass == value
        assert from_named({"enabled": False, "hires_pass": value}).hires_pass == value


percent = st.floats(min_value=0, max_value=100, allow_nan=False)
score = st.floats(min_value=0, max_value=10, allow_nan=False)
step_choice = st.one_of(
    st.builds(lambda v: {"steps_percent": v}, percent),
    st.builds(lambda v: {"start_step": v}, st.integers(min_value=0, max_value=10_000)),
    st.builds(lambda v: {"start_step_percentage": v}, percent),
)


@st.composite
def valid_settings(draw: st.DrawFn) -> Settings:
    steps = draw(step_choice)
    return from_named({
        "enabled": draw(st.booleans()),
        "checkpoint": draw(st.text(min_size=1).filter(str.strip)).strip(),
        "aesthetic_score": draw(score),
        "negative_aesthetic_score": draw(score),
        "hires_pass": draw(st.sampled_from(list(HIRES_PASS_LABELS))),
        **steps,
    })


@given(valid_settings())
def test_enabled_settings_have_exactly_one_step_field(settings: Settings) -> None:
    assert sum(getattr(settings, name) is not None for name in STEP_FIELDS) == 1


@given(valid_settings())
def test_named_values_of_settings_give_the_same_settings(settings: Settings) -> None:
    assert from_named(dataclasses.asdict(settings)) == settings


@given(valid_settings(), st.integers(min_value=0, max_value=3), percent)
def test_a_step_override_replaces_whichever_step_field_was_set(
    settings: Settings, which: int, value: float
) -> None:
    name = STEP_FIELDS[which % 3]
    changed = with_overrides(settings, **{name: int(value) if name == "start_step" else value})
    assert [n for n in STEP_FIELDS if getattr(changed, n) is not None] == [name]
    assert dataclasses.replace(changed, **{n: getattr(settings, n) for n in STEP_FIELDS}) == settings


@given(valid_settings(), st.sampled_from([math.nan, -1.0, 100.5, True, "20"]))
def test_overrides_are_validated_like_any_input(settings: Settings, bad: object) -> None:
    with pytest.raises(SettingsError, match="'steps_percent'"):
        with_overrides(settings, steps_percent=bad)


def test_overrides_refuse_unknown_names() -> None:
    with pytest.raises(SettingsError, match="unknown argument 'steps'"):
        with_overrides(ON, steps=20)


def test_xyz_overrides_can_supply_what_the_panel_lacks() -> None:
    panel = [True, "", 20, 6.0, 2.5, 24, "Default (from settings)"]
    settings = from_ui_args(panel, overrides={"checkpoint": CKPT, "steps_percent": 30})
    assert settings == dataclasses.replace(ON, steps_percent=30.0)


def test_zero_percent_override_turns_the_refiner_off_without_a_checkpoint() -> None:
    assert from_ui_args([True, "", 20], overrides={"steps_percent": 0}).refiner_off


@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()), max_size=9))
def test_any_positional_args_give_settings_or_a_settings_error(args: list) -> None:
    try:
        settings = from_ui_args(args)
    except SettingsError as error:
        assert str(error).startswith("SDXL Refiner: ")
    else:
        assert isinstance(settings, Settings)


any_value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                      st.lists(st.integers(), max_size=2))


@given(st.dictionaries(st.sampled_from([*FIELD_NAMES, "steps", "refiner"]), any_value, max_size=8))
def test_any_named_args_give_settings_or_a_settings_error(values: dict) -> None:
    try:
        settings = from_named(values)
    except SettingsError as error:
        assert str(error).startswith("SDXL Refiner: ")
    else:
        assert from_named(dataclasses.asdict(settings)) == settings


def test_named_values_that_are_not_a_mapping_are_refused_naming_what_came() -> None:
    with pytest.raises(SettingsError) as caught:
        from_named([("enabled", True)])  # type: ignore[arg-type]
    assert str(caught.value) == (
        "SDXL Refiner: 'args' must be a dict of named arguments; got [('enabled', True)] (list). "
        'Send an object such as {"enabled": true}.'
    )
