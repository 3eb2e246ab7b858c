"""The switch plan: how many steps the base runs, and which model call goes first to the refiner."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from k_diffusion import sampling

from sdxl_refiner.core.errors import PlanError, SettingsError
from sdxl_refiner.core.schedule import (
    SwitchPlan,
    SwitchPoint,
    calls_per_step,
    plan_switch,
    refiner_step_count,
    switch_point,
    switch_point_from_calls,
)
from sdxl_refiner.core.settings import Settings


def percent(p: float) -> Settings:
    return Settings(enabled=True, steps_percent=p)


def js_math_round(value: Fraction) -> int:
    """JavaScript's Math.round on an exact rational: the nearest integer, halves towards +inf."""
    return math.floor(value + Fraction(1, 2))


PLAN_TABLE = [
    # (steps, refiner %, base steps)
    (30, 20, 24),
    (25, 10, 22),  # 2.5 refiner steps round up to 3 (Python's round would give 2)
    (25, 30, 17),  # 7.5 -> 8
    (20, 20, 16),
    (20, 12.5, 17),  # 2.5 -> 3
    (10, 25, 7),  # 2.5 -> 3
    (10, 24, 8),  # 2.4 -> 2
    (10, 1, 9),  # 0.1 rounds to 0, but a share above 0 runs at least one step
    (3, 50, 1),  # 1.5 -> 2
    (50, 100, 0),
    (1, 20, 0),
    (7, 0, 7),
]


@pytest.mark.parametrize(("steps", "share", "base_steps"), PLAN_TABLE)
def test_plan_switch_rounds_the_refiner_share_half_up(steps: int, share: float, base_steps: int) -> None:
    plan = plan_switch(percent(share), steps)
    assert (plan.steps, plan.base_steps, plan.refiner_steps) == (steps, base_steps, steps - base_steps)


def test_refiner_step_count_is_math_round_of_the_decimal_share_with_at_least_one_step() -> None:
    mismatches = []
    for steps in range(1, 151):
        for tenths in range(1001):
            expected = js_math_round(Fraction(steps * tenths, 1000))
            expected = max(expected, 1) if tenths else 0
            if refiner_step_count(steps, tenths / 10) != expected:
                mismatches.append((steps, tenths / 10))
    assert mismatches == []


@given(steps=st.integers(1, 150), low=st.floats(0, 100), high=st.floats(0, 100))
def test_a_larger_share_never_gives_fewer_refiner_steps(steps: int, low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert refiner_step_count(steps, low) <= refiner_step_count(steps, high)


def test_disabled_or_zero_share_plans_no_refiner_steps_and_no_notes() -> None:
    for settings in (Settings(enabled=False, steps_percent=50), percent(0)):
        assert plan_switch(settings, 30) == SwitchPlan(30, 30, ())
        assert not plan_switch(settings, 30).active


@pytest.mark.parametrize(("start_step", "base_steps", "noted"), [(0, 0, True), (1, 1, False), (24, 24, False),
                                                                  (29, 29, False), (30, 29, True), (99, 29, True)])
def test_start_step_gives_the_base_steps_clamped_before_the_end(start_step: int, base_steps: int, noted: bool) -> None:
    plan = plan_switch(Settings(enabled=True, steps_percent=None, start_step=start_step), 30)
    assert plan.base_steps == base_steps
    assert bool(plan.notes) == noted


def test_start_step_past_the_end_says_what_it_was_clamped_to() -> None:
    (note,) = plan_switch(Settings(enabled=True, steps_percent=None, start_step=40), 30).notes
    assert "start_step 40" in note and "start_step 29" in note


@given(steps=st.integers(1, 150), start=st.integers(0, 1000).map(lambda tenths: tenths / 10))
def test_start_step_percentage_agrees_with_the_complementary_refiner_share(steps: int, start: float) -> None:
    by_start = plan_switch(Settings(enabled=True, steps_percent=None, start_step_percentage=start), steps)
    by_share = plan_switch(percent(100 - start), steps)
    assert by_start.base_steps == by_share.base_steps


def test_start_step_percentage_of_90_at_25_steps_leaves_3_refiner_steps_like_10_percent() -> None:
    plan = plan_switch(Settings(enabled=True, steps_percent=None, start_step_percentage=90), 25)
    assert plan.refiner_steps == 3


@pytest.mark.parametrize(("start", "base_steps"), [(0, 0), (100, 25)])
def test_start_step_percentage_accepts_both_ends_of_0_to_100(start: int, base_steps: int) -> None:
    """100 means the base runs every step (the refiner none), as "refiner 0 %" does."""
    plan = plan_switch(Settings(enabled=True, steps_percent=None, start_step_percentage=start), 25)
    assert plan.base_steps == base_steps


def test_start_step_overrides_a_percentage_left_set() -> None:
    assert plan_switch(Settings(enabled=True, steps_percent=20, start_step=5), 30).base_steps == 5


def test_a_full_share_is_allowed_but_noted_as_unable_to_compose() -> None:
    plan = plan_switch(percent(100), 30)
    assert plan.base_steps == 0
    assert plan.notes == (
        "The refiner runs all 30 steps and the base none: a refiner cannot compose an image "
        "from noise, so expect a poor result. A share of 10-30 % is usual.",
    )


def test_a_full_share_of_two_steps_names_both_steps_not_the_one_step_case() -> None:
    (note,) = plan_switch(percent(100), 2).notes
    assert "all 2 steps" in note and "1 step" not in note


@pytest.mark.parametrize("value", [-0.5, 100.5, float("nan"), True, "80"])
def test_a_start_step_percentage_outside_0_to_100_is_refused_with_the_fix(value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        plan_switch(Settings(enabled=True, steps_percent=None, start_step_percentage=value), 20)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"start_step_percentage: {value!r} is not a number from 0 to 100. "
        "Give the share of the steps the base runs before the refiner starts, e.g. 80."
    )


@pytest.mark.parametrize("value", [-1, 2.5, True, "3"])
def test_a_start_step_that_is_not_a_whole_number_of_at_least_0_is_refused_with_the_fix(value: object) -> None:
    with pytest.raises(SettingsError) as caught:
        plan_switch(Settings(enabled=True, steps_percent=None, start_step=value), 20)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"start_step: {value!r} is not a whole number of at least 0. "
        "Give the number of steps the base runs before the refiner takes over."
    )


def test_an_enabled_refiner_without_any_step_field_is_refused_naming_all_three() -> None:
    with pytest.raises(SettingsError) as caught:
        plan_switch(Settings(enabled=True, steps_percent=None), 20)
    assert str(caught.value) == (
        "SDXL Refiner is enabled but none of steps_percent, start_step, start_step_percentage is set. "
        "Set exactly one of them, e.g. steps_percent=20."
    )


def test_one_step_with_a_share_goes_to_the_refiner_with_a_note() -> None:
    plan = plan_switch(percent(20), 1)
    assert (plan.base_steps, plan.refiner_steps) == (0, 1)
    assert plan.notes == ("This pass runs 1 step: the refiner runs it, the base runs none.",)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_below_one_or_not_whole_are_refused_by_name(steps: object) -> None:
    with pytest.raises(SettingsError, match=r"steps: .* at least 1"):
        plan_switch(percent(20), steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [-1, 100.5, float("nan"), "20"])
def test_a_share_outside_0_to_100_is_refused_by_name(share: object) -> None:
    with pytest.raises(SettingsError) as caught:
        refiner_step_count(20, share)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"Refiner steps %: {share!r} is not a number from 0 to 100. "
        "Give the share of the sampling steps the refiner runs, e.g. 20."
    )


def karras(steps: int) -> torch.Tensor:
    return sampling.get_sigmas_karras(steps, 0.0292, 14.6146)


@pytest.mark.parametrize("sampler", ["euler", "sample_euler", "euler_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_first_order_samplers_make_one_call_per_step(sampler: str) -> None:
    assert calls_per_step(sampler, karras(5)) == [1] * 5


@pytest.mark.parametrize("sampler", ["heun", "dpm_2", "dpmpp_sde", "dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_second_order_samplers_make_two_calls_but_one_on_the_step_ending_at_zero(sampler: str) -> None:
    assert calls_per_step(sampler, karras(5)) == [2, 2, 2, 2, 1]


def test_a_schedule_that_does_not_end_at_zero_has_two_calls_in_every_second_order_step() -> None:
    assert calls_per_step("heun", karras(5)[:-1]) == [2, 2, 2, 2]


def test_ancestral_second_order_samplers_skip_the_second_call_where_sigma_down_reaches_zero() -> None:
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    assert calls_per_step("dpm_2_ancestral", sigmas, eta=0.0) == [2, 2, 1]
    assert calls_per_step("dpm_2_ancestral", sigmas, eta=100.0) == [1, 1, 1]


def test_switch_call_index_counts_every_call_of_the_base_steps() -> None:
    sigmas = karras(6)
    point = switch_point("heun", sigmas, 4)
    assert point.call_index == 8
    assert point.expected_sigma == pytest.approx(float(sigmas[4]))
    assert switch_point("euler", sigmas, 4).call_index == 4
    assert switch_point("heun", sigmas, 0).call_index == 0
    assert switch_point_from_calls([2, 2, 1], 2) == SwitchPoint(4, None, None, 2)


def test_ancestral_second_order_samplers_count_calls_at_k_diffusions_default_eta_of_1() -> None:
    sigmas = karras(6)
    assert switch_point("dpm_2_ancestral", sigmas, 5) == switch_point("dpm_2_ancestral", sigmas, 5, eta=1.0)
    assert switch_point("dpm_2_ancestral", sigmas, 5) != switch_point("dpm_2_ancestral", sigmas, 5, eta=2.0)


def test_a_plan_with_every_step_on_the_base_never_switches() -> None:
    assert switch_point("heun", karras(6), 6).never
    assert switch_point("dpm_fast", karras(6), 6).never
    assert switch_point_from_calls([2, 2, 1], 3).never


def test_samplers_without_a_step_list_switch_at_the_sigma_where_step_k_starts() -> None:
    sigmas = karras(10)
    point = switch_point("dpm_adaptive", sigmas, 7)
    assert point.call_index is None
    assert point.sigma == pytest.approx(float(sigmas[7]))
    assert switch_point("sample_dpm_fast", sigmas, 0).call_index == 0


def test_an_unknown_sampler_is_refused_with_the_allowed_list() -> None:
    with pytest.raises(PlanError) as caught:
        switch_point("restart", karras(5), 2)
    message = str(caught.value)
    assert message.startswith("sampler 'restart' is not one the SDXL Refiner can switch exactly. Allowed: ")
    assert message.endswith(". Pick one of these samplers, or turn the refiner off for this one.")
    listed = message.split("Allowed: ", 1)[1].split(". Pick", 1)[0].split(", ")
    assert listed == sorted(listed) and {"euler", "dpm_2_ancestral", "dpm_fast", "dpm_adaptive"} <= set(listed)


def test_samplers_without_a_step_list_have_no_calls_per_step() -> None:
    for name in ("dpm_fast", "dpm_adaptive"):
        with pytest.raises(PlanError) as caught:
            calls_per_step(name, karras(5))
        assert str(caught.value) == (
            f"sampler '{name}' has no fixed list of steps, so its model calls cannot be counted per step; "
            "use switch_point, which switches it by sigma."
        )


def test_calls_per_step_refuses_an_unknown_sampler_by_its_name() -> None:
    with pytest.raises(PlanError, match=r"^sampler 'restart' is not one the SDXL Refiner can switch exactly"):
        calls_per_step("restart", karras(5))


@pytest.mark.parametrize("base_steps", [-1, 6])
def test_base_steps_outside_the_schedule_are_refused(base_steps: int) -> None:
    with pytest.raises(PlanError) as caught:
        switch_point("euler", karras(5), base_steps)
    assert str(caught.value) == (
        f"base steps {base_steps} is outside 0..5 for a schedule of 5 steps; "
        "plan the switch with the steps this pass really runs."
    )


def test_a_sampler_callable_without_a_name_is_refused_naming_what_it_is() -> None:
    nameless = functools.partial(sampling.sample_euler)
    with pytest.raises(PlanError) as caught:
        switch_point(nameless, karras(5), 2)
    assert str(caught.value).startswith(f"sampler {repr(nameless)!r} is not one")


def test_a_hosts_own_sampler_function_is_refused_by_its_name() -> None:
    def restart_sampler(model: object, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return x

    with pytest.raises(PlanError, match="'restart_sampler' is not one"):
        switch_point(restart_sampler, karras(5), 2)
    assert switch_point(sampling.sample_heun, karras(5), 2).call_index == 4
