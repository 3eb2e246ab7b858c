"""The base is back in its slot however a pass ends, the refiner is loaded only at the switch,
and a plan that does not fit the sampler's calls stops the pass instead of switching wrongly."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from k_diffusion.sampling import DPMSolver

from sdxl_refiner.core.errors import PlanError
from sdxl_refiner.core.handoff import Handoff, UNetSlot, route_model, unet_handoff
from sdxl_refiner.core.schedule import NEVER, SwitchPoint, switch_point, switch_point_from_calls
from tests.support.denoisers import (
    base_conds,
    base_unet,
    build_stack,
    run_sampler,
    schedule_sigmas,
    slot_and_base,
)

EXTRA_ARGS = {"cond": base_conds(1, seed=10), "uncond": base_conds(1, seed=11), "cond_scale": 3.0}


class Interrupted(Exception):
    """What a host raises from the sampler callback when the user presses Interrupt."""


class FailingUNet(torch.nn.Module):
    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (raised by the test)")


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def assert_base_untouched(slot: UNetSlot, base: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert slot.get() is base
    after = base.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) and after[key].device == before[key].device for key in before)


def run(sampler: str, refiner: object, base_steps: int, callback=None, steps: int = 8, plan_steps: int | None = None):
    base = base_unet()
    sd_model, cfg = build_stack(base)
    slot = UNetSlot(sd_model.model, "diffusion_model")
    sigmas = schedule_sigmas("karras", cfg.inner_model, steps)
    plan_sigmas = sigmas if plan_steps is None else schedule_sigmas("karras", cfg.inner_model, plan_steps)
    before = snapshot(base)
    error = None
    handoff = None
    try:
        with unet_handoff(slot, refiner, switch_point(sampler, plan_sigmas, base_steps)) as handoff:
            run_sampler(sampler, route_model(cfg, handoff), sigmas, EXTRA_ARGS, 0, callback=callback)
    except Exception as caught:
        error = caught
    assert_base_untouched(slot, base, before)
    return handoff, error


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m_sde"])
def test_base_is_restored_after_an_exception_inside_the_refiner_call(sampler: str) -> None:
    handoff, error = run(sampler, FailingUNet(), base_steps=4)
    assert isinstance(error, RuntimeError) and "out of memory" in str(error)
    assert handoff is not None and handoff.switched_at_call is not None


@pytest.mark.parametrize("interrupt_at", [2, 5])
def test_base_is_restored_after_an_interrupt_flagged_mid_loop(interrupt_at: int) -> None:
    def callback(info: dict) -> None:
        if info["i"] == interrupt_at:
            raise Interrupted

    handoff, error = run("dpmpp_sde", refiner_unet_with_base_widths(), base_steps=4, callback=callback)
    assert isinstance(error, Interrupted)
    assert handoff is not None and handoff.on_refiner is False
    assert (handoff.switched_at_call is not None) == (interrupt_at >= 4)


def refiner_unet_with_base_widths() -> torch.nn.Module:
    return copy.deepcopy(base_unet(seed=5))


def test_base_is_restored_after_a_normal_run_and_the_switch_is_recorded() -> None:
    handoff, error = run("heun", refiner_unet_with_base_widths(), base_steps=3)
    assert error is None
    assert handoff is not None and handoff.switched_at_call == 6 and handoff.calls == 15


def test_a_refiner_given_as_a_loader_is_loaded_once_just_before_its_first_call() -> None:
    events: list[str] = []
    refiner = refiner_unet_with_base_widths()

    def load() -> torch.nn.Module:
        events.append("load")
        return refiner

    base = base_unet()
    sd_model, cfg = build_stack(base)
    slot = UNetSlot(sd_model.model, "diffusion_model")
    sigmas = schedule_sigmas("karras", cfg.inner_model, 6)
    with unet_handoff(slot, load, switch_point("dpm_2", sigmas, 2), on_switch=lambda unet: events.append("placed")) as handoff:
        def model(x, sigma, **kwargs):
            events.append("refiner" if handoff.before_call(sigma) else "base")
            return cfg(x, sigma, **kwargs)

        run_sampler("dpm_2", model, sigmas, EXTRA_ARGS, 0)
    assert events == ["base"] * 4 + ["load", "placed"] + ["refiner"] * 7


def test_an_interrupt_before_the_switch_never_loads_the_refiner() -> None:
    def load() -> torch.nn.Module:
        raise AssertionError("the refiner was loaded although the pass stopped before the switch")

    def callback(info: dict) -> None:
        if info["i"] == 1:
            raise Interrupted

    _, error = run("euler", load, base_steps=4, callback=callback)
    assert isinstance(error, Interrupted)


def test_a_plan_made_for_other_sigmas_stops_the_pass_naming_the_sampler() -> None:
    def load() -> torch.nn.Module:
        raise AssertionError("the refiner was loaded for a wrong switch")

    _, error = run("dpmpp_2m", load, base_steps=5, steps=20, plan_steps=10)
    assert isinstance(error, PlanError)
    assert "dpmpp_2m" in str(error) and "step 5" in str(error)


def test_once_on_the_refiner_every_later_call_stays_there_whatever_its_sigma() -> None:
    slot, _ = slot_and_base()
    refiner = torch.nn.Linear(1, 1)
    handoff = Handoff(slot, refiner, SwitchPoint(None, 1.0))
    decisions = [handoff.before_call(torch.tensor([sigma])) for sigma in (5.0, 2.0, 0.9, 3.0, 7.0)]
    assert decisions == [False, False, True, True, True]
    assert slot.get() is refiner and handoff.switched_at_call == 2


def test_a_never_point_keeps_every_call_on_the_base() -> None:
    slot, base = slot_and_base()
    handoff = Handoff(slot, torch.nn.Linear(1, 1), NEVER)
    assert not any(handoff.before_call(sigma) for sigma in (10.0, 1.0, 0.0))
    assert slot.get() is base


def test_the_switch_check_accepts_a_sigma_rounded_to_half_precision_and_s_churn() -> None:
    expected = 0.7071067
    for sigma in (torch.tensor([expected], dtype=torch.float16), expected * 1.3):
        slot, _ = slot_and_base()
        handoff = Handoff(slot, torch.nn.Linear(1, 1), SwitchPoint(0, None, expected, 3, "euler"))
        assert handoff.before_call(sigma)


def test_routed_model_reaches_the_models_attributes_and_runs_inside_dpm_solver() -> None:
    base = base_unet()
    sd_model, cfg = build_stack(base)
    slot = UNetSlot(sd_model.model, "diffusion_model")
    with unet_handoff(slot, refiner_unet_with_base_widths(), SwitchPoint(3, None)) as handoff:
        routed = route_model(cfg, handoff)
        assert routed.inner_model is cfg.inner_model
        solver = DPMSolver(routed, EXTRA_ARGS)
        x = torch.randn(1, 4, 8, 8) * 14.6
        solver.dpm_solver_fast(x, solver.t(torch.tensor(14.6)), solver.t(torch.tensor(0.03)), 6)
        assert handoff.switched_at_call == 3 and handoff.calls == 6
    assert slot.get() is base


def test_refiner_extra_args_replace_the_samplers_only_on_refiner_calls() -> None:
    slot, _ = slot_and_base()
    seen: list[object] = []
    handoff = Handoff(slot, torch.nn.Linear(1, 1), SwitchPoint(1, None))
    routed = route_model(
        lambda x, sigma, *args, cond, scale: seen.append((args, cond, scale)), handoff, {"cond": "refiner cond"}
    )
    for _ in range(3):
        routed(torch.zeros(1), torch.ones(1), "positional", cond="base cond", scale=7)
    assert seen == [(("positional",), "base cond", 7)] + [(("positional",), "refiner cond", 7)] * 2


def test_a_slot_must_name_an_existing_attribute() -> None:
    with pytest.raises(AttributeError, match=r"^Module has no attribute 'diffusion_model' to hold a UNet$"):
        UNetSlot(torch.nn.Module(), "diffusion_model")


def test_a_switch_that_no_call_reaches_is_reported_as_missed() -> None:
    handoff, error = run("dpm_fast", refiner_unet_with_base_widths(), base_steps=8, steps=10)
    assert error is None and handoff is not None and handoff.switch_missed

    def callback(info: dict) -> None:
        if info["i"] == 1:
            raise Interrupted

    handoff, _ = run("euler", refiner_unet_with_base_widths(), base_steps=4, callback=callback)
    assert handoff is not None and handoff.switch_missed
    handoff, _ = run("euler", refiner_unet_with_base_widths(), base_steps=4)
    assert handoff is not None and not handoff.switch_missed


def test_a_refiner_load_that_fails_at_the_switch_leaves_the_base_in_place() -> None:
    def load() -> torch.nn.Module:
        raise OSError("refiner file truncated (raised by the test)")

    handoff, error = run("dpmpp_2m", load, base_steps=3)
    assert isinstance(error, OSError)
    assert handoff is not None and handoff.switched_at_call is None


@given(calls=st.lists(st.integers(1, 3), min_size=1, max_size=30), data=st.data())
def test_calls_go_to_the_refiner_exactly_from_the_first_call_of_step_k(calls: list[int], data: st.DataObject) -> None:
    base_steps = data.draw(st.integers(0, len(calls)))
    slot, _ = slot_and_base()
    handoff = Handoff(slot, torch.nn.Linear(1, 1), switch_point_from_calls(calls, base_steps))
    steps_of_calls = [step for step, count in enumerate(calls) for _ in range(count)]
    decisions = [handoff.before_call(1.0) for _ in steps_of_calls]
    assert decisions == [step >= base_steps for step in steps_of_calls]


def test_a_routed_model_used_after_its_pass_keeps_the_base_in_place() -> None:
    slot, base = slot_and_base()
    with unet_handoff(slot, torch.nn.Linear(1, 1), SwitchPoint(1, None)) as handoff:
        routed = route_model(lambda x, sigma: x, handoff)
        routed(torch.zeros(1), torch.ones(1))
    routed(torch.zeros(1), torch.ones(1))
    assert slot.get() is base and handoff.switched_at_call is None and not handoff.on_refiner
