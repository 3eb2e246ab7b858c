"""The refiner's conds from the base's: widths from the refiner UNet, the aesthetic score embedded as sgm does."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdxl_refiner.core.conditioning import (
    RefinerCondSpec,
    check_fits_unet,
    refiner_conditioning,
    text_encoders_identical,
    timestep_embedding,
)
from sdxl_refiner.core.errors import ConditioningError
from tests.support.denoisers import WIDTHS, base_conds

REFINER = RefinerCondSpec("refiner", WIDTHS.refiner_context_dim, WIDTHS.refiner_adm, WIDTHS.scalar_embed_dim)
BASE_TYPE = RefinerCondSpec("base", WIDTHS.base_context_dim, WIDTHS.base_adm, WIDTHS.scalar_embed_dim)
KEPT = WIDTHS.refiner_adm - WIDTHS.scalar_embed_dim


def test_timestep_embedding_of_4_is_cos_then_sin_at_frequencies_1_and_one_hundredth() -> None:
    embedded = timestep_embedding(torch.tensor([6.0, 2.5]), 4)
    by_hand = [[math.cos(6.0), math.cos(0.06), math.sin(6.0), math.sin(0.06)],
               [math.cos(2.5), math.cos(0.025), math.sin(2.5), math.sin(0.025)]]
    assert torch.allclose(embedded, torch.tensor(by_hand), atol=1e-6)


def test_timestep_embedding_of_odd_width_ends_with_a_zero() -> None:
    embedded = timestep_embedding(torch.tensor([6.0]), 5)
    assert embedded.shape == (1, 5) and embedded[0, 4] == 0
    assert torch.allclose(embedded[0, :4], timestep_embedding(torch.tensor([6.0]), 4)[0])


def test_timestep_embedding_is_float32_even_where_float64_is_the_default_dtype() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        embedded = timestep_embedding(torch.tensor([6.0, 2.5], dtype=torch.float16), 6)
    finally:
        torch.set_default_dtype(previous)
    assert embedded.dtype == torch.float32


def test_timestep_embedding_is_made_on_the_device_of_its_values() -> None:
    embedded = timestep_embedding(torch.zeros(3, device="meta"), 8)
    assert embedded.device.type == "meta" and embedded.shape == (3, 8)


@given(score=st.floats(0, 10), index=st.integers(0, 127))
def test_timestep_embedding_of_256_matches_the_formula_at_every_frequency(score: float, index: int) -> None:
    embedded = timestep_embedding(torch.tensor([score]), 256)[0]
    frequency = math.exp(-math.log(10000) * index / 128)
    assert embedded[index].item() == pytest.approx(math.cos(score * frequency), abs=2e-5)
    assert embedded[128 + index].item() == pytest.approx(math.sin(score * frequency), abs=2e-5)


def test_refiner_conds_are_the_second_encoders_context_and_the_vector_with_the_aesthetic_embedding() -> None:
    base = base_conds(3, seed=0)
    cond = refiner_conditioning(base, REFINER, 6.0)
    assert torch.equal(cond["crossattn"], base["crossattn"][..., -WIDTHS.refiner_context_dim:])
    assert torch.equal(cond["vector"][:, :KEPT], base["vector"][:, :KEPT])
    aesthetic = timestep_embedding(torch.tensor([6.0]), WIDTHS.scalar_embed_dim)
    assert torch.equal(cond["vector"][:, KEPT:], aesthetic.expand(3, -1))
    check_fits_unet(cond, REFINER)


def test_cond_and_uncond_of_different_batch_sizes_each_keep_their_own_rows() -> None:
    cond = refiner_conditioning(base_conds(4, seed=0), REFINER, 6.0)
    uncond = refiner_conditioning(base_conds(1, seed=1), REFINER, 2.5)
    assert cond["vector"].shape == (4, WIDTHS.refiner_adm) and cond["crossattn"].shape[0] == 4
    assert uncond["vector"].shape == (1, WIDTHS.refiner_adm) and uncond["crossattn"].shape[0] == 1
    assert not torch.equal(cond["vector"][0, KEPT:], uncond["vector"][0, KEPT:])


def test_released_widths_keep_2304_columns_and_the_last_1280_of_the_context() -> None:
    spec = RefinerCondSpec("refiner", 1280, 2560, 256)
    base = {"crossattn": torch.randn(1, 77, 2048), "vector": torch.randn(1, 2816)}
    cond = refiner_conditioning(base, spec, 6.0)
    assert torch.equal(cond["crossattn"], base["crossattn"][..., 768:])
    assert torch.equal(cond["vector"][:, :2304], base["vector"][:, :2304])
    assert cond["vector"].shape == (1, 2560)


def test_half_precision_conds_stay_half_precision_and_other_keys_pass_through() -> None:
    base = {key: value.half() for key, value in base_conds(2, seed=0).items()}
    base["c_concat"] = torch.zeros(2, 5, 8, 8)
    cond = refiner_conditioning(base, REFINER, 6.0)
    assert cond["vector"].dtype == torch.float16 and cond["crossattn"].dtype == torch.float16
    assert cond["c_concat"] is base["c_concat"]


def test_a_base_type_refiner_takes_the_base_conds_unchanged() -> None:
    base = base_conds(2, seed=0)
    cond = refiner_conditioning(base, BASE_TYPE, 6.0)
    assert cond.keys() == base.keys() and all(cond[key] is base[key] for key in base)


NOT_THIS_BASE = "The refiner does not belong to this base; choose a refiner made for it."
NOT_THIS_BASE_MODEL = "The refiner does not belong to this base model; choose a refiner made for it."


@pytest.mark.parametrize(("spec", "message"), [
    (RefinerCondSpec("refiner", WIDTHS.base_context_dim + 1, WIDTHS.refiner_adm, WIDTHS.scalar_embed_dim),
     f"base text context: width 12 is narrower than the refiner UNet's context dim 13. {NOT_THIS_BASE}"),
    (RefinerCondSpec("refiner", WIDTHS.refiner_context_dim, WIDTHS.base_adm + 10, WIDTHS.scalar_embed_dim),
     "base vector: shape (1, 32) has fewer than the 38 columns the refiner keeps (ADM width 42 minus aesthetic "
     f"embedding 4). {NOT_THIS_BASE}"),
    (RefinerCondSpec("refiner", WIDTHS.refiner_context_dim, 4, 4),
     "refiner UNet: ADM input width 4 leaves no room for the base's vector besides an aesthetic embedding of 4. "
     "This checkpoint is not a refiner-type SDXL UNet; choose an SDXL refiner or base checkpoint."),
    (RefinerCondSpec("base", WIDTHS.refiner_context_dim, WIDTHS.base_adm, WIDTHS.scalar_embed_dim),
     f"text context: width 12 does not match the refiner UNet's context dim 8. {NOT_THIS_BASE_MODEL}"),
    (RefinerCondSpec("base", WIDTHS.base_context_dim, WIDTHS.refiner_adm, WIDTHS.scalar_embed_dim),
     f"vector: shape (1, 32) does not match the refiner UNet's ADM input width 28. {NOT_THIS_BASE_MODEL}"),
])
def test_conds_that_do_not_fit_the_refiner_unet_are_refused_before_sampling(spec: RefinerCondSpec, message: str) -> None:
    with pytest.raises(ConditioningError) as caught:
        refiner_conditioning(base_conds(1, seed=0), spec, 6.0)
    assert str(caught.value) == message


def test_a_refiner_may_take_the_whole_base_context_and_all_of_the_vector_but_its_score() -> None:
    base = base_conds(2, seed=0)
    spec = RefinerCondSpec("refiner", WIDTHS.base_context_dim, WIDTHS.base_adm + 4, 4)
    cond = refiner_conditioning(base, spec, 6.0)
    assert torch.equal(cond["crossattn"], base["crossattn"])
    assert torch.equal(cond["vector"][:, : WIDTHS.base_adm], base["vector"])


def test_the_refiners_conds_are_made_on_the_device_of_the_base_conds() -> None:
    base = {key: value.to("meta") for key, value in base_conds(2, seed=0).items()}
    cond = refiner_conditioning(base, REFINER, 6.0)
    assert cond["vector"].device.type == "meta" and cond["vector"].shape == (2, REFINER.adm_in_channels)


def test_the_narrowest_refiner_geometry_keeps_one_column_and_embeds_the_score_in_two() -> None:
    base = base_conds(2, seed=0)
    cond = refiner_conditioning(base, RefinerCondSpec("refiner", WIDTHS.refiner_context_dim, 3, 2), 6.0)
    score = torch.tensor([[math.cos(6.0), math.sin(6.0)]]).expand(2, -1)
    assert torch.equal(cond["vector"], torch.cat([base["vector"][:, :1], score], dim=1))


@pytest.mark.parametrize("embed_dim", [0, 1])
def test_a_refiner_without_room_for_cos_and_sin_of_the_score_is_refused(embed_dim: int) -> None:
    spec = RefinerCondSpec("refiner", WIDTHS.refiner_context_dim, WIDTHS.refiner_adm, embed_dim)
    with pytest.raises(ConditioningError, match=rf"leaves no room .* an aesthetic embedding of {embed_dim}\. "):
        refiner_conditioning(base_conds(1, seed=0), spec, 6.0)


def test_conds_with_a_row_count_that_differs_between_context_and_vector_are_refused_as_a_bug() -> None:
    cond = {"crossattn": torch.zeros(2, 5, REFINER.context_dim), "vector": torch.zeros(3, REFINER.adm_in_channels)}
    with pytest.raises(ConditioningError) as caught:
        check_fits_unet(cond, REFINER)
    assert str(caught.value) == (
        "conds: the vector has 3 rows and the text context 2; they must have one row per prompt. "
        "This is a bug in the caller; please report it."
    )


def test_conds_without_a_vector_are_refused_naming_the_missing_key() -> None:
    with pytest.raises(ConditioningError) as caught:
        refiner_conditioning({"crossattn": torch.zeros(1, 5, 12)}, REFINER, 6.0)
    assert str(caught.value) == (
        "conds: no 'vector' entry (keys given: ['crossattn']). The refiner needs SDXL conditioning with 'crossattn' "
        "and 'vector'; use an SDXL base model."
    )


def encoder(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"ln_final.weight": torch.randn(8, generator=generator), "proj": torch.randn(8, 4, generator=generator)}


class Untouchable(dict):
    def __getitem__(self, key: str) -> torch.Tensor:
        raise AssertionError("a tensor was read although the two dicts are one object")


def test_text_encoders_that_are_one_object_are_identical_without_reading_a_tensor() -> None:
    state = Untouchable(encoder())
    assert text_encoders_identical(state, state)


def test_text_encoders_sharing_storage_or_equal_in_value_are_identical() -> None:
    state = encoder()
    assert text_encoders_identical(state, dict(state))
    assert text_encoders_identical(state, {key: value.clone() for key, value in state.items()})


def test_tensors_sharing_storage_are_identical_without_comparing_their_values(monkeypatch) -> None:
    state = encoder()

    def no_reading(*args: object) -> bool:
        raise AssertionError("the values of tensors sharing storage were compared")

    monkeypatch.setattr(torch, "equal", no_reading)
    assert text_encoders_identical(state, {key: value.view(value.shape) for key, value in state.items()})


def test_a_transposed_view_of_the_same_storage_is_compared_by_value() -> None:
    square = torch.arange(16.0).reshape(4, 4)
    assert not text_encoders_identical({"proj": square}, {"proj": square.t()})


def test_equal_values_in_another_dtype_are_not_identical() -> None:
    assert not text_encoders_identical({"proj": torch.arange(4.0)}, {"proj": torch.arange(4.0).half()})


@pytest.mark.parametrize("other_device", ["cpu", "meta"])
def test_a_text_encoder_without_data_is_never_identical(other_device: str) -> None:
    empty = {"proj": torch.zeros(8, 4, device="meta")}
    other = {"proj": torch.zeros(8, 4, device=other_device)}
    assert not text_encoders_identical(empty, other)
    assert not text_encoders_identical(other, empty)


@pytest.mark.parametrize("change", ["value", "dtype", "shape", "missing key", "extra key"])
def test_text_encoders_differing_in_anything_are_not_identical(change: str) -> None:
    state, other = encoder(), {key: value.clone() for key, value in encoder().items()}
    if change == "value":
        other["proj"][3, 1] += 1e-3
    elif change == "dtype":
        other["proj"] = other["proj"].half()
    elif change == "shape":
        other["proj"] = other["proj"].reshape(4, 8)
    elif change == "missing key":
        del other["proj"]
    else:
        other["logit_scale"] = torch.ones(1)
    assert not text_encoders_identical(state, other)
    assert not text_encoders_identical(other, state)
