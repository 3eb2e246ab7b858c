"""The handoff's call accounting on its own: where exactly it switches, what it tolerates and
what it refuses, and that the routed model is the sampler's model in every other respect."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from sdxl_refiner.core.errors import PlanError
from sdxl_refiner.core.handoff import (
    MAX_CHURN_FACTOR,
    SIGMA_RELATIVE_TOLERANCE,
    Handoff,
    UNetSlot,
    route_model,
)
from sdxl_refiner.core.schedule import SwitchPoint
from tests.support.denoisers import slot_and_base


def handoff_for(point: SwitchPoint) -> tuple[Handoff, UNetSlot, torch.nn.Module]:
    slot, _ = slot_and_base()
    refiner = torch.nn.Linear(1, 1)
    return Handoff(slot, refiner, point), slot, refiner


def test_a_new_handoff_is_on_the_base_and_open():
    handoff, _, _ = handoff_for(SwitchPoint(call_index=0, sigma=None))
    assert handoff.on_refiner is False
    assert handoff.switched_at_call is None
    assert handoff.before_call(1.0) is True


def test_a_closed_handoff_keeps_every_later_call_on_the_base():
    handoff, slot, _ = handoff_for(SwitchPoint(call_index=0, sigma=None))
    base = slot.get()
    handoff.restore()
    assert handoff.before_call(1.0) is False
    assert slot.get() is base
    assert handoff.calls == 0


@pytest.mark.parametrize(
    ("factor", "switches"),
    [
        (1.0, True),
        (1 + SIGMA_RELATIVE_TOLERANCE * 0.9, True),
        (1 - SIGMA_RELATIVE_TOLERANCE * 0.9, True),
        (1 + SIGMA_RELATIVE_TOLERANCE * 1.1, False),
    ],
)
def test_without_a_step_list_the_first_call_at_or_within_rounding_of_the_switch_sigma_switches(factor, switches):
    point_sigma = 0.75
    handoff, slot, refiner = handoff_for(SwitchPoint(call_index=None, sigma=point_sigma))
    assert handoff.before_call(torch.tensor([point_sigma * factor, 9.0])) is switches
    assert (slot.get() is refiner) is switches


def test_without_a_step_list_a_sigma_exactly_at_the_rounding_limit_still_switches():
    point_sigma = 0.75
    handoff, slot, refiner = handoff_for(SwitchPoint(call_index=None, sigma=point_sigma))
    assert handoff.before_call(point_sigma * (1 + SIGMA_RELATIVE_TOLERANCE)) is True
    assert slot.get() is refiner


@pytest.mark.parametrize(
    "factor",
    [1 - SIGMA_RELATIVE_TOLERANCE, 1.0, MAX_CHURN_FACTOR, MAX_CHURN_FACTOR * (1 + SIGMA_RELATIVE_TOLERANCE)],
)
def test_the_planned_call_is_accepted_from_rounding_below_to_the_most_churn_above(factor):
    expected = 2.0
    handoff, slot, refiner = handoff_for(SwitchPoint(call_index=1, sigma=None, expected_sigma=expected))
    assert handoff.before_call(9.0) is False
    assert handoff.before_call(expected * factor) is True
    assert handoff.switched_at_call == 1
    assert slot.get() is refiner


@pytest.mark.parametrize(
    "factor", [1 - SIGMA_RELATIVE_TOLERANCE * 1.01, MAX_CHURN_FACTOR * (1 + SIGMA_RELATIVE_TOLERANCE) * 1.01]
)
@pytest.mark.parametrize("sampler", ["dpmpp_2m", None])
def test_a_planned_call_at_another_sigma_is_refused_with_where_it_came_and_what_to_report(factor, sampler):
    expected = 2.0
    point = SwitchPoint(call_index=1, sigma=None, expected_sigma=expected, base_steps=3, sampler=sampler)
    handoff, slot, _ = handoff_for(point)
    base = slot.get()
    handoff.before_call(9.0)
    with pytest.raises(PlanError) as caught:
        handoff.before_call(expected * factor)
    message = str(caught.value)
    assert message.startswith("The refiner was planned to take over at step 3 (model call 1) ")
    assert f"of {sampler or 'this sampler'}, at sigma 2, but that call came at sigma {expected * factor:.6g}. " in message
    assert message.endswith(
        "The plan was made for other steps or another schedule than the sampler runs; "
        "the base was kept in place. Report the sampler and scheduler used."
    )
    assert slot.get() is base


def test_the_routed_model_shows_the_models_attributes_and_copies_without_recursing():
    handoff, _, _ = handoff_for(SwitchPoint(call_index=None, sigma=None))
    # a sampler's model with attributes of its own, as the WebUI's CFG denoiser has
    routed = route_model(SimpleNamespace(inner_model="the wrapped denoiser", handoff_like=3), handoff)
    assert routed.inner_model == "the wrapped denoiser"
    assert routed.handoff_like == 3
    duplicate = copy.copy(routed)
    assert duplicate.inner is routed.inner
    bare = object.__new__(type(routed))
    for name in ("inner", "handoff", "refiner_extra_args"):
        with pytest.raises(AttributeError, match=f"^{name}$"):
            getattr(bare, name)
