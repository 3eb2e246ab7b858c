"""The Forge binding's conditioning modifier against Forge's own cond classes (from the pinned source).

Forge compiles each cond into ``model_conds`` of its ``Condition`` classes and batches them by
those classes' ``can_concat``/``concat``; the modifier must hand the refiner conds that Forge
batches the same way, at the refiner's widths, and leave every base call exactly as it came.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sdxl_refiner.bindings.patcher.routing import RefinerRoute, conditioning_modifier, convert_item
from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.handoff import UNetSlot, unet_handoff
from sdxl_refiner.core.schedule import SwitchPoint
from tests.support.forge_sources import ForgeUnavailable, forge_module

REFINER = RefinerCondSpec("refiner", context_dim=12, adm_in_channels=12 + 5 * 6, scalar_embed_dim=6)
AS_BASE = RefinerCondSpec("base", context_dim=20, adm_in_channels=12 + 6 * 6, scalar_embed_dim=6)


@pytest.fixture(scope="module")
def condition():
    try:
        return forge_module("backend/sampling/condition.py")
    except ForgeUnavailable as missing:
        pytest.skip(str(missing))


def base_cond(batch: int, tokens: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "crossattn": torch.randn(batch, tokens, 20, generator=generator),
        "vector": torch.randn(batch, 12 + 6 * 6, generator=generator),
    }


class Kmodel(torch.nn.Module):
    """Stands for a ``KModel`` (a module): the modifier only hands it on."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name


def switched_route(spec: RefinerCondSpec, scores=(6.0, 2.5)):
    """A route whose handoff has switched to the refiner at the first call."""
    route = RefinerRoute(model=Kmodel("base"), scores=scores, spec=spec)
    refiner = Kmodel("refiner")
    context = unet_handoff(UNetSlot(route, "model"), refiner, SwitchPoint(0, None))
    handoff = context.__enter__()
    route.handoff = handoff
    assert handoff.before_call(torch.tensor([1.0]))
    return route, refiner, context


def test_a_converted_cond_holds_the_refiner_widths_in_forges_own_classes(condition):
    [item] = condition.compile_conditions(base_cond(2, 77, 1))
    converted = convert_item(item, REFINER, 6.0)
    expected = refiner_conditioning(base_cond(2, 77, 1), REFINER, 6.0)
    assert type(converted["model_conds"]["c_crossattn"]) is condition.ConditionCrossAttn
    assert type(converted["model_conds"]["y"]) is condition.Condition
    assert torch.equal(converted["model_conds"]["c_crossattn"].cond, expected["crossattn"])
    assert torch.equal(converted["model_conds"]["y"].cond, expected["vector"])
    assert torch.equal(converted["cross_attn"], expected["crossattn"])
    assert torch.equal(converted["pooled_output"], expected["vector"])
    # the base's item is left as it was: Forge may reuse it for a later call
    assert item["model_conds"]["c_crossattn"].cond.shape[-1] == 20


def test_other_keys_of_a_cond_pass_through(condition):
    [item] = condition.compile_conditions(base_cond(1, 77, 2))
    item["strength"] = 0.7
    item["model_conds"]["c_concat"] = condition.Condition(torch.ones(1, 4, 8, 8))
    converted = convert_item(item, REFINER, 6.0)
    assert converted["strength"] == 0.7
    assert converted["model_conds"]["c_concat"] is item["model_conds"]["c_concat"]


def test_conds_of_other_lengths_still_batch_as_forge_batches_them(condition):
    """A 154-token prompt beside a 77-token negative: Forge repeats the shorter to a common length."""
    [long] = condition.compile_conditions(base_cond(1, 154, 3))
    [short] = condition.compile_conditions(base_cond(1, 77, 4))
    long_r, short_r = convert_item(long, REFINER, 6.0), convert_item(short, REFINER, 2.5)
    crossattn = long_r["model_conds"]["c_crossattn"]
    assert crossattn.can_concat(short_r["model_conds"]["c_crossattn"])
    batched = crossattn.concat([short_r["model_conds"]["c_crossattn"]])
    assert batched.shape == (2, 154, REFINER.context_dim)
    assert long_r["model_conds"]["y"].concat([short_r["model_conds"]["y"]]).shape == (2, REFINER.adm_in_channels)


def test_base_calls_are_handed_on_untouched(condition):
    route = RefinerRoute(model=Kmodel("base"), scores=(6.0, 2.5), spec=REFINER)
    modifier = conditioning_modifier(route)
    cond = condition.compile_conditions(base_cond(1, 77, 5))
    uncond = condition.compile_conditions(base_cond(1, 77, 6))
    given = (Kmodel("base"), torch.zeros(1), torch.ones(1), uncond, cond, 7.0, {"a": 1}, 3)
    returned = modifier(*given)
    assert all(out is into for out, into in zip(returned, given, strict=True))


def test_refiner_calls_get_the_refiner_model_and_its_conds_with_each_score(condition):
    route, refiner, context = switched_route(REFINER, scores=(7.5, 1.5))
    try:
        cond = condition.compile_conditions(base_cond(1, 77, 7))
        uncond = condition.compile_conditions(base_cond(1, 77, 8))
        model, x, t, new_uncond, new_cond, scale, options, seed = conditioning_modifier(route)(
            Kmodel("base"), "x", "t", uncond, cond, 5.0, "options", 9
        )
        assert model is refiner
        assert (x, t, scale, options, seed) == ("x", "t", 5.0, "options", 9)
        assert torch.equal(new_cond[0]["pooled_output"], refiner_conditioning(base_cond(1, 77, 7), REFINER, 7.5)["vector"])
        assert torch.equal(new_uncond[0]["pooled_output"], refiner_conditioning(base_cond(1, 77, 8), REFINER, 1.5)["vector"])
    finally:
        context.__exit__(None, None, None)
    assert route.model.name == "base"


def test_a_missing_uncond_stays_missing(condition):
    route, _, context = switched_route(REFINER)
    try:
        cond = condition.compile_conditions(base_cond(1, 77, 9))
        returned = conditioning_modifier(route)(Kmodel("base"), None, None, None, cond, 1.0, {}, 0)
        assert returned[3] is None
    finally:
        context.__exit__(None, None, None)


def test_a_base_type_refiner_takes_the_base_conds_unchanged(condition):
    route, refiner, context = switched_route(AS_BASE)
    try:
        cond = condition.compile_conditions(base_cond(1, 77, 10))
        model, *_, new_cond, _, _, _ = conditioning_modifier(route)(Kmodel("base"), None, None, None, cond, 1.0, {}, 0)
        assert model is refiner
        assert torch.equal(new_cond[0]["model_conds"]["c_crossattn"].cond, cond[0]["cross_attn"])
        assert torch.equal(new_cond[0]["model_conds"]["y"].cond, cond[0]["pooled_output"])
    finally:
        context.__exit__(None, None, None)


def test_the_modifier_survives_the_patchers_deep_copy_as_itself():
    """``UnetPatcher.clone`` deep-copies model options: a bound method would carry a copy of its route."""
    route = RefinerRoute(model=Kmodel("base"), scores=(6.0, 2.5), spec=REFINER)
    modifier = conditioning_modifier(route)
    options = copy.deepcopy({"conditioning_modifiers": [modifier]})
    assert options["conditioning_modifiers"][0] is modifier


def test_a_route_without_a_running_pass_is_on_the_base():
    route = RefinerRoute(model=Kmodel("base"), scores=(6.0, 2.5), spec=REFINER)
    assert not route.on_refiner
