"""Infotext: what is written comes back as the same settings, through the WebUI's text format."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdxl_refiner.core.infotext import (
    BUILTIN_KEY_CHECKPOINT,
    BUILTIN_KEY_SWITCH_AT,
    KEY_AESTHETIC_SCORE,
    KEY_CHECKPOINT,
    KEY_HIRES_PASS,
    KEY_HIRES_SPLIT,
    KEY_SPLIT,
    KEY_STEPS_PERCENT,
    infotext_params,
    joined_notes,
    settings_from_builtin_infotext,
    settings_from_infotext,
)
from sdxl_refiner.core.settings import HIRES_PASS_LABELS, STEP_FIELDS, Settings, from_named

# The WebUI 1.10.1 infotext line: "Key: value" pairs joined by ", "; a value holding a comma, colon
# or newline is written as a JSON string. A key is a word character followed by words, spaces,
# dashes or slashes; a value runs to the next comma unless it is quoted.
PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def write_line(params: dict[str, str]) -> str:
    def quoted(text: str) -> str:
        return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text

    base = {"Steps": "30", "Sampler": "DPM++ 2M", "Model": "sd_xl_base_1.0"}
    return ", ".join(f"{key}: {quoted(value)}" for key, value in {**base, **params}.items())


def read_line(line: str) -> dict[str, str]:
    params = {}
    for key, value in PAIR.findall(line):
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = json.loads(value)
        params[key.strip()] = value
    return params


CKPT = "sd_xl_refiner_1.0 [7440042bbd]"
ON = Settings(enabled=True, checkpoint=CKPT)

title_text = st.text(
    alphabet=st.sampled_from("abcXYZ019 _-.,:;[]()+=#&'é漢"), min_size=1, max_size=40
).map(str.strip).filter(bool)
percent = st.floats(min_value=0, max_value=100, allow_nan=False)
score = st.floats(min_value=0, max_value=10, allow_nan=False)


@st.composite
def enabled_settings(draw: st.DrawFn) -> Settings:
    step_field = draw(st.sampled_from(STEP_FIELDS))
    if step_field == "steps_percent":
        step_value: object = draw(percent.filter(lambda v: v > 0))
    elif step_field == "start_step":
        step_value = draw(st.integers(min_value=0, max_value=1000))
    else:
        step_value = draw(percent)
    return from_named({
        "enabled": True,
        "checkpoint": draw(title_text),
        step_field: step_value,
        "aesthetic_score": draw(st.one_of(st.just(6.0), score)),
        "negative_aesthetic_score": draw(st.one_of(st.just(2.5), score)),
        "hires_pass": draw(st.sampled_from(list(HIRES_PASS_LABELS))),
    })


@given(enabled_settings())
def test_written_infotext_parses_back_to_the_same_settings(settings: Settings) -> None:
    written = infotext_params(settings, checkpoint_title=settings.checkpoint, plan=None)
    named = settings_from_infotext(read_line(write_line(written)))
    assert named is not None
    assert from_named(named) == settings


@given(enabled_settings())
def test_every_written_key_starts_with_the_unique_prefix(settings: Settings) -> None:
    written = infotext_params(settings, checkpoint_title=settings.checkpoint, plan=None)
    assert written
    assert all(key.startswith("SDXL Refiner") for key in written)
    assert BUILTIN_KEY_CHECKPOINT not in written
    assert BUILTIN_KEY_SWITCH_AT not in written


@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(checkpoint=CKPT), dataclasses.replace(ON, steps_percent=0.0)],
    ids=["default", "off with checkpoint", "on at 0 %"],
)
def test_nothing_is_written_when_the_refiner_changes_nothing(settings: Settings) -> None:
    assert infotext_params(settings, checkpoint_title=CKPT, plan=None) == {}


def test_a_typical_generation_writes_these_exact_keys() -> None:
    settings = dataclasses.replace(ON, aesthetic_score=7.5, hires_pass="both")
    assert infotext_params(settings, checkpoint_title=CKPT, plan=None) == {
        "SDXL Refiner": CKPT,
        "SDXL Refiner steps": "20%",
        "SDXL Refiner aesthetic score": "7.5",
        "SDXL Refiner hires pass": "both",
    }


def test_the_split_and_notes_come_from_the_plan() -> None:
    schedule = pytest.importorskip("sdxl_refiner.core.schedule")
    plan = schedule.plan_switch(ON, 30)
    written = infotext_params(ON, checkpoint_title=CKPT, plan=plan)
    assert written[KEY_SPLIT] == "base 24 / refiner 6"
    inactive = schedule.SwitchPlan(steps=30, base_steps=30)
    assert infotext_params(ON, checkpoint_title=CKPT, plan=inactive) == {}
    noted = schedule.SwitchPlan(steps=30, base_steps=24, notes=("one", "two"))
    assert infotext_params(ON, checkpoint_title=CKPT, plan=noted)["SDXL Refiner notes"] == "one; two"


@given(enabled_settings(), st.integers(min_value=1, max_value=150), st.integers(min_value=1, max_value=150))
def test_both_hires_passes_write_their_own_split_and_parse_back(settings: Settings, steps: int, hires_steps: int) -> None:
    schedule = pytest.importorskip("sdxl_refiner.core.schedule")
    written: dict[str, str] = {}
    for pass_steps, hires in ((steps, False), (hires_steps, True)):
        plan = schedule.plan_switch(settings, pass_steps)
        written.update(infotext_params(settings, checkpoint_title=settings.checkpoint, plan=plan, hires_pass_run=hires))
        if plan.active:
            key = KEY_HIRES_SPLIT if hires else KEY_SPLIT
            assert written[key] == f"base {plan.base_steps} / refiner {plan.refiner_steps}"
    named = settings_from_infotext(read_line(write_line(written)))
    assert named is None if not written else from_named(named) == settings


def test_notes_of_two_passes_are_joined_each_once() -> None:
    assert joined_notes(None, ["one", "two"]) == "one; two"
    assert joined_notes("one; two", ["two", "three", ""]) == "one; two; three"
    assert joined_notes("a; b", ["a; b"]) == "a; b"
    assert joined_notes("", []) == ""


def test_infotext_without_our_keys_gives_none() -> None:
    assert settings_from_infotext({"Steps": "30", "Refiner": CKPT, "Refiner switch at": "0.8"}) is None


def test_missing_optional_keys_restore_their_defaults() -> None:
    named = settings_from_infotext({KEY_CHECKPOINT: CKPT, KEY_STEPS_PERCENT: "25%"})
    assert named is not None
    assert from_named(named) == dataclasses.replace(ON, steps_percent=25.0)


def test_a_damaged_value_is_named_by_the_normaliser() -> None:
    named = settings_from_infotext({KEY_CHECKPOINT: CKPT, KEY_AESTHETIC_SCORE: "high", KEY_HIRES_PASS: "x"})
    assert named is not None
    assert named["aesthetic_score"] == "high"
    with pytest.raises(ValueError, match="'aesthetic_score' must be a number from 0 to 10; got 'high'"):
        from_named(named)


def test_a_builtin_switch_given_as_a_sigma_imports_the_refiner_alone() -> None:
    params = {BUILTIN_KEY_CHECKPOINT: CKPT, BUILTIN_KEY_SWITCH_AT: "0.8"}
    assert settings_from_builtin_infotext(params, switch_at_is_a_fraction=False) == {"enabled": True, "checkpoint": CKPT}


def test_builtin_refiner_infotext_imports_as_start_percentage() -> None:
    named = settings_from_builtin_infotext({BUILTIN_KEY_CHECKPOINT: CKPT, BUILTIN_KEY_SWITCH_AT: "0.8"})
    assert named is not None
    assert from_named(named) == dataclasses.replace(ON, steps_percent=None, start_step_percentage=80.0)
    assert settings_from_builtin_infotext({KEY_CHECKPOINT: CKPT, BUILTIN_KEY_CHECKPOINT: CKPT}) is None
    assert settings_from_builtin_infotext({"Steps": "20"}) is None
