"""The refiner UNet is built from the host's config, checked against the weights; only a file no
config describes is built from its shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdxl_refiner.core.checkpoint import classify_checkpoint, load_unet
from sdxl_refiner.core.errors import CheckpointError
from sdxl_refiner.core.unet_config import (
    SDXL_HEAD_CHANNELS,
    HostUNetConfig,
    infer_unet_config,
    unet_constructor_params,
)
from tests.support.cache import Cache
from tests.support.checkpoints import random_unet_state, small_unet_params, write_checkpoint
from tests.support.released import SDXL_BASE_PARAMS, SDXL_REFINER_PARAMS
from tests.support.sgm_unet import SgmUNet, heads_of
from tests.test_sgm_layout import fixture_table

PREFIX = "model.diffusion_model."


def shapes_of(params: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in SgmUNet(**params).state_dict().items()}


def host(params: dict, source: str = "tiny.yaml") -> HostUNetConfig:
    return HostUNetConfig.from_params(source, params)


head_settings = st.one_of(
    st.builds(lambda width, legacy: {"num_head_channels": width, "legacy": legacy}, st.sampled_from([8, 16, 32]), st.booleans()),
    st.builds(lambda heads, legacy: {"num_heads": heads, "legacy": legacy}, st.sampled_from([1, 2, 4]), st.booleans()),
)

sdxl_configs = st.builds(
    dict,
    model_channels=st.sampled_from([32, 64]),
    channel_mult=st.lists(st.sampled_from([1, 2]), min_size=1, max_size=3),
    num_res_blocks=st.integers(1, 2),
    attention_mask=st.integers(0, 7),
    depth=st.integers(1, 2),
    middle=st.one_of(st.none(), st.integers(1, 2)),
    context_dim=st.sampled_from([16, 48]),
    adm=st.one_of(st.none(), st.sampled_from([40, 72])),
    linear=st.booleans(),
    heads=head_settings,
)


def sgm_params(case: dict) -> dict:
    levels = len(case["channel_mult"])
    params = dict(
        in_channels=4,
        out_channels=4,
        model_channels=case["model_channels"],
        channel_mult=case["channel_mult"],
        num_res_blocks=case["num_res_blocks"],
        attention_resolutions=[2**level for level in range(levels) if case["attention_mask"] >> level & 1],
        transformer_depth=case["depth"],
        context_dim=case["context_dim"],
        use_linear_in_transformer=case["linear"],
        use_spatial_transformer=True,
        use_checkpoint=False,
        spatial_transformer_attn_type="softmax-xformers",
        **case["heads"],
    )
    if case["middle"] is not None:
        params["transformer_depth_middle"] = case["middle"]
    if case["adm"]:
        params.update(adm_in_channels=case["adm"], num_classes="sequential")
    return params


@settings(max_examples=60, deadline=None)
@given(sdxl_configs)
def test_any_config_a_unet_was_built_from_is_accepted_and_used_as_it_is(case):
    params = sgm_params(case)
    inferred = infer_unet_config(shapes_of(params))
    assert unet_constructor_params(inferred, host(params), "tiny.safetensors") == params


CONTRADICTIONS = [
    ("model_channels", lambda p: p.update(model_channels=48), "48", "32"),
    ("channel_mult", lambda p: p.update(channel_mult=[1, 2, 2]), "[1, 2, 2]", "[1, 2]"),
    ("num_res_blocks", lambda p: p.update(num_res_blocks=2), "[2, 2]", "[1, 1]"),
    ("transformer_depth", lambda p: p.update(transformer_depth=2, transformer_depth_middle=1), "[0, 2]", "[0, 1]"),
    ("transformer_depth", lambda p: p.update(attention_resolutions=[1, 2]), "[1, 1]", "[0, 1]"),
    ("transformer_depth_middle", lambda p: p.update(transformer_depth_middle=3), "3", "1"),
    ("context_dim", lambda p: p.update(context_dim=[80, 80]), "80", "64"),
    ("adm_in_channels", lambda p: p.update(adm_in_channels=1000), "1000", "1344"),
    ("adm_in_channels", lambda p: p.pop("num_classes"), "None", "1344"),
    ("use_linear_in_transformer", lambda p: p.update(use_linear_in_transformer=False), "False", "True"),
    ("in_channels", lambda p: p.update(in_channels=9), "9", "4"),
    ("out_channels", lambda p: p.update(out_channels=8), "8", "4"),
    ("use_spatial_transformer", lambda p: p.update(use_spatial_transformer=False), "False", "True"),
    ("use_spatial_transformer", lambda p: p.pop("use_spatial_transformer"), "False", "True"),
    ("use_linear_in_transformer", lambda p: p.pop("use_linear_in_transformer"), "False", "True"),
    ("context_dim", lambda p: p.update(context_dim=[64, 80]), "[64, 80]", "64"),
]


def test_unset_fields_take_sgms_defaults_where_they_agree_with_the_weights():
    params = small_unet_params("refiner")
    inferred = infer_unet_config(shapes_of(params))
    assert params["transformer_depth"] == 1
    unset = {key: value for key, value in params.items() if key != "transformer_depth"}
    assert unet_constructor_params(inferred, host(unset), "tiny.safetensors") == unset


def test_every_contradiction_is_named_in_one_message():
    params = small_unet_params("refiner")
    inferred = infer_unet_config(shapes_of(params))
    with pytest.raises(CheckpointError) as caught:
        unet_constructor_params(inferred, host({**params, "model_channels": 48, "out_channels": 8}), "tiny.safetensors")
    assert (
        "out_channels is 8 in the config and 4 in the weights; model_channels is 48 in the config and 32 in the weights"
        in str(caught.value)
    )


@pytest.mark.parametrize(("field", "change", "configured", "weighed"), CONTRADICTIONS)
def test_a_config_that_contradicts_the_weights_is_refused_naming_source_field_and_both_values(
    field, change, configured, weighed
):
    params = small_unet_params("refiner")
    inferred = infer_unet_config(shapes_of(params))
    wrong = dict(params)
    change(wrong)
    with pytest.raises(CheckpointError) as caught:
        unet_constructor_params(inferred, HostUNetConfig.from_params("its config tiny.yaml", wrong, "fix tiny.yaml"), "tiny.safetensors")
    message = str(caught.value)
    assert f"{field} is {configured} in the config and {weighed} in the weights" in message
    assert "'tiny.safetensors'" in message and "its config tiny.yaml" in message
    assert message.endswith("To fix it: fix tiny.yaml.")


@pytest.mark.parametrize(
    ("heads", "why"),
    [
        ({"num_head_channels": 48, "legacy": False}, "num_head_channels 48 does not split the 64 channels"),
        ({"num_head_channels": 128, "legacy": True}, "num_head_channels 128 does not split the 64 channels"),
        # legacy: 64 // 20 = 3 heads of 64 // 3 = 21 channels, 63 in all
        ({"num_head_channels": 20, "legacy": True}, "num_head_channels 20 does not split the 64 channels"),
        ({"num_heads": 3, "legacy": False}, "num_heads 3 does not split the 64 channels"),
        ({"legacy": False}, "neither num_head_channels nor num_heads"),
    ],
)
def test_a_head_setting_that_cannot_split_the_weights_channels_is_refused(heads, why):
    params = {key: value for key, value in small_unet_params("refiner").items() if key not in ("num_head_channels", "legacy")}
    inferred = infer_unet_config(shapes_of({**params, "num_head_channels": 64}))
    with pytest.raises(CheckpointError, match=why):
        unet_constructor_params(inferred, host({**params, **heads}), "tiny.safetensors")


def test_without_a_legacy_key_sgm_default_legacy_applies_to_the_head_check():
    params = {key: value for key, value in small_unet_params("refiner").items() if key != "legacy"}
    params["num_head_channels"] = 48
    inferred = infer_unet_config(shapes_of(params))
    assert unet_constructor_params(inferred, host(params), "tiny.safetensors") == params


def test_a_config_with_no_head_setting_is_refused_with_that_reason_and_the_fix():
    params = {key: value for key, value in small_unet_params("refiner").items() if key != "num_head_channels"}
    inferred = infer_unet_config(shapes_of({**params, "num_head_channels": 64}))
    with pytest.raises(CheckpointError) as caught:
        unet_constructor_params(inferred, HostUNetConfig.from_params("tiny.yaml", params, "fix it"), "tiny.safetensors")
    assert str(caught.value).endswith(
        "tiny.yaml: it sets neither num_head_channels nor num_heads. To fix it: fix it."
    )


def test_a_legacy_head_width_that_does_not_divide_still_builds_whole_heads_as_sgm_does():
    params = {**small_unet_params("refiner"), "num_head_channels": 48, "legacy": True}
    inferred = infer_unet_config(shapes_of(params))
    assert unet_constructor_params(inferred, host(params), "tiny.safetensors") == params


def test_a_config_without_the_fields_of_an_sdxl_unet_is_refused_naming_what_is_missing():
    params = small_unet_params("refiner")
    inferred = infer_unet_config(shapes_of(params))
    partial = {key: value for key, value in params.items() if key != "channel_mult"}
    with pytest.raises(CheckpointError, match="does not set channel_mult"):
        unet_constructor_params(inferred, host(partial), "tiny.safetensors")


def test_a_unet_with_class_label_embeddings_is_refused_as_not_sdxl():
    shapes = {**shapes_of(small_unet_params("base")), "label_emb.weight": (10, 128)}
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == (
        "The UNet does not have the SDXL layout: class-label embeddings (label_emb.weight) are not an SDXL ADM input."
    )


def test_a_level_whose_width_is_not_a_multiple_of_the_model_channels_is_refused():
    shapes = shapes_of(small_unet_params("base"))  # model_channels 32, channel_mult [1, 2]
    weight = shapes["input_blocks.1.0.in_layers.2.weight"]
    shapes["input_blocks.1.0.in_layers.2.weight"] = (48, *weight[1:])
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == (
        "The UNet does not have the SDXL layout: 48 channels at level 0 is not a multiple of 32."
    )


def test_a_level_with_attention_in_some_residual_blocks_only_is_refused():
    shapes = shapes_of({**small_unet_params("base"), "num_res_blocks": 2})
    shapes = {key: shape for key, shape in shapes.items() if not key.startswith("input_blocks.5.1.")}
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == (
        "The UNet does not have the SDXL layout: level 1 mixes transformer depths [0, 1] (0: no attention)."
    )


def test_a_spatial_transformer_without_transformer_blocks_is_refused_naming_it():
    shapes = {key: shape for key, shape in shapes_of(small_unet_params("base")).items()
              if not key.startswith("middle_block.1.transformer_blocks.")}
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == (
        "The UNet does not have the SDXL layout: middle_block.1 has a projection but no transformer blocks."
    )


@pytest.mark.parametrize(
    ("dropped", "problem"),
    [
        ("input_blocks.3.", "no residual blocks after the last downsampling (input_blocks)"),
        ("middle_block.1.", "the middle block has no spatial transformer (middle_block.1)"),
    ],
)
def test_a_unet_missing_a_part_of_the_sdxl_layout_is_refused_naming_it(dropped, problem):
    shapes = {key: shape for key, shape in shapes_of(small_unet_params("base")).items() if not key.startswith(dropped)}
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == f"The UNet does not have the SDXL layout: {problem}."


def _without_the_last_output_block(shapes: dict) -> dict:
    return {key: shape for key, shape in shapes.items() if not key.startswith("output_blocks.3.")}


def _with_an_extra_output_block(shapes: dict) -> dict:
    return {**shapes, "output_blocks.4.0.in_layers.2.weight": shapes["output_blocks.3.0.in_layers.2.weight"]}


def _with_another_context_in_an_output_transformer(shapes: dict) -> dict:
    key = next(key for key in shapes if key.startswith("output_blocks.") and key.endswith("attn2.to_k.weight"))
    return {**shapes, key: (shapes[key][0], shapes[key][1] + 8)}


def _with_a_convolution_projection_in_an_output_transformer(shapes: dict) -> dict:
    key = next(key for key in shapes if key.startswith("output_blocks.") and key.endswith("proj_in.weight"))
    return {**shapes, key: (*shapes[key], 1, 1)}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_with_a_convolution_projection_in_an_output_transformer,
         "some transformers project with linear layers and some with convolutions"),
        (_without_the_last_output_block, "expected 4 output blocks for 2 levels"),
        (_with_an_extra_output_block, "expected 4 output blocks for 2 levels"),
        (_with_another_context_in_an_output_transformer, "transformers disagree on the context width: [96, 104]"),
    ],
)
def test_output_blocks_that_do_not_mirror_the_input_side_are_refused(change, problem):
    shapes = change(shapes_of(small_unet_params("base")))  # 2 levels of 1 residual block: 4 output blocks
    with pytest.raises(CheckpointError) as caught:
        infer_unet_config(shapes)
    assert str(caught.value) == f"The UNet does not have the SDXL layout: {problem}."


def test_without_a_config_the_shapes_and_the_family_head_width_decide():
    params = small_unet_params("refiner")
    inferred = infer_unet_config(shapes_of(params))
    built = unet_constructor_params(inferred, None, "tiny.safetensors")
    assert built == inferred.as_sgm_params()
    assert built["num_head_channels"] == SDXL_HEAD_CHANNELS


@pytest.mark.parametrize(("table", "released"), [("unet_sdxl_base", SDXL_BASE_PARAMS), ("unet_sdxl_refiner", SDXL_REFINER_PARAMS)])
def test_the_released_configs_fit_the_released_weights(table, released):
    shapes = {key[len(PREFIX):]: shape for key, shape in fixture_table(table).items()}
    assert unet_constructor_params(infer_unet_config(shapes), host(released), "sd_xl.safetensors") == released


def test_host_configs_compare_by_value_whatever_the_key_order():
    params = small_unet_params("refiner")
    reordered = dict(reversed(list(params.items())))
    assert host(params) == host(reordered) and hash(host(params)) == hash(host(reordered))
    assert host(params) != host({**params, "num_head_channels": 16})


def test_a_config_that_is_not_plain_data_is_refused():
    with pytest.raises(CheckpointError, match="not plain data"):
        HostUNetConfig.from_params("odd.yaml", {"channel_mult": object()})


@pytest.fixture
def refiner_16(tmp_path):
    """A refiner whose UNet was trained with 16-wide heads (4 heads of the 64 channels)."""
    params = {**small_unet_params("refiner"), "num_head_channels": 16}
    path = write_checkpoint(tmp_path / "refiner16.safetensors", "refiner", unet_state=random_unet_state(params, seed=3, scale=0.3))
    return path, params


def run_unet(unet: torch.nn.Module, params: dict) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, params["context_dim"], generator=generator)
    y = torch.randn(1, params["adm_in_channels"], generator=generator)
    with torch.no_grad():
        return unet(x, torch.tensor([400.0]), context=context, y=y)


def test_the_loaded_unet_has_the_configs_heads_and_computes_what_the_trained_model_computes(refiner_16):
    path, params = refiner_16
    loaded = load_unet(path, lambda kwargs: SgmUNet(**kwargs), torch.float32, host_config=host(params))
    assert heads_of(loaded) == {(4, 16)}
    trained = SgmUNet(**params)
    trained.load_state_dict(loaded.state_dict())
    assert torch.equal(run_unet(loaded, params), run_unet(trained, params))
    by_shapes = load_unet(path, lambda kwargs: SgmUNet(**kwargs), torch.float32)
    assert heads_of(by_shapes) == {(1, 64)}
    assert not torch.allclose(run_unet(by_shapes, params), run_unet(loaded, params)), (
        "the head width must matter, or this test could not tell a wrong build"
    )


def test_loading_refuses_a_contradicting_config_before_building_anything(refiner_16):
    path, params = refiner_16
    built = []

    def build(kwargs):
        built.append(kwargs)
        return SgmUNet(**kwargs)

    with pytest.raises(CheckpointError, match="model_channels is 64 in the config and 32 in the weights"):
        load_unet(path, build, torch.float32, host_config=host({**params, "model_channels": 64}))
    assert built == []


def test_another_config_for_the_same_file_is_another_cached_unet(refiner_16):
    path, params = refiner_16
    cache = Cache(capacity=2)
    build = lambda kwargs: SgmUNet(**kwargs)  # noqa: E731
    first = cache.load(path, build, torch.float32, host_config=host(params))
    assert cache.load(path, build, torch.float32, host_config=host(dict(params))) is first
    other = cache.load(path, build, torch.float32, host_config=host({**params, "num_head_channels": 32}))
    assert other is not first and heads_of(other) == {(2, 32)}


def test_a_unet_only_file_and_a_file_with_text_encoders_say_how_their_kind_was_told(tmp_path):
    with_text = classify_checkpoint(write_checkpoint(tmp_path / "full.safetensors", "refiner"))
    unet_only = classify_checkpoint(write_checkpoint(tmp_path / "unet.safetensors", "unet_only_refiner"))
    assert with_text.kind == unet_only.kind
    assert with_text.kind_from_text_encoder and not unet_only.kind_from_text_encoder
