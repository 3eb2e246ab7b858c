"""Classifying checkpoints from their header and inferring the UNet config from tensor shapes."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdxl_refiner.core.checkpoint import (
    CheckpointKind,
    classify_checkpoint,
    read_unet_state_dict,
)
from sdxl_refiner.core.errors import CheckpointError
from sdxl_refiner.core.unet_config import infer_unet_config
from tests.support.checkpoints import write_checkpoint, write_pickle_checkpoint, write_sparse_checkpoint
from tests.support.released import SDXL_BASE_PARAMS, SDXL_REFINER_PARAMS
from tests.support.sgm_unet import SgmUNet
from tests.test_sgm_layout import fixture_table

PREFIX = "model.diffusion_model."
RUNTIME_ONLY = {"use_checkpoint", "spatial_transformer_attn_type"}


def as_built_by_sgm(params: dict) -> dict:
    """What sgm's UNetModel (45c443b) makes of its params: per-level lists, depths only where
    attention is built, the middle depth (explicit, else the last level's), one context width."""
    built = {key: value for key, value in params.items() if key not in RUNTIME_ONLY}
    levels = len(built["channel_mult"])
    depth = built.pop("transformer_depth")
    depth = [depth] * levels if isinstance(depth, int) else list(depth)
    middle = built.pop("transformer_depth_middle", None)
    built["transformer_depth_middle"] = depth[-1] if middle is None else middle
    attention_levels = [level for level in range(levels) if 2**level in built["attention_resolutions"]]
    built["transformer_depth"] = {level: depth[level] for level in attention_levels}
    built["attention_resolutions"] = sorted(built["attention_resolutions"])
    context = built["context_dim"]
    if isinstance(context, list):
        assert len(set(context)) == 1
        built["context_dim"] = context[0]
    blocks = built["num_res_blocks"]
    built["num_res_blocks"] = [blocks] * levels if isinstance(blocks, int) else list(blocks)
    return built


def unet_shapes(table: dict) -> dict:
    return {key[len(PREFIX) :]: shape for key, shape in table.items() if key.startswith(PREFIX)}


@pytest.mark.parametrize(
    ("table", "yaml_params"),
    [
        ("unet_sdxl_base", SDXL_BASE_PARAMS),
        ("unet_sdxl_refiner", SDXL_REFINER_PARAMS),
        ("checkpoint_sdxl_base", SDXL_BASE_PARAMS),
        ("checkpoint_sdxl_refiner", SDXL_REFINER_PARAMS),
    ],
)
def test_inferred_config_builds_what_the_released_yaml_builds(table, yaml_params):
    config = infer_unet_config(unet_shapes(fixture_table(table)))
    params = config.as_sgm_params()
    assert as_built_by_sgm(params) == as_built_by_sgm(yaml_params)
    assert {
        key: params[key] for key in ("model_channels", "context_dim", "adm_in_channels", "channel_mult")
    } == {
        "model_channels": yaml_params["model_channels"],
        "context_dim": as_built_by_sgm(yaml_params)["context_dim"],
        "adm_in_channels": yaml_params["adm_in_channels"],
        "channel_mult": yaml_params["channel_mult"],
    }


@pytest.mark.parametrize("name", ["base", "refiner"])
def test_inferred_config_rebuilds_the_released_layout_exactly(name):
    table = fixture_table(f"unet_sdxl_{name}")
    with torch.device("meta"):
        unet = SgmUNet(**infer_unet_config(unet_shapes(table)).as_sgm_params())
    assert {PREFIX + key: list(value.shape) for key, value in unet.state_dict().items()} == table


unet_configs = st.builds(
    dict,
    model_channels=st.sampled_from([32, 64]),
    channel_mult=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    num_res_blocks=st.integers(1, 3),
    depth=st.integers(1, 3),
    middle=st.integers(1, 3),
    attention_mask=st.integers(0, 15),
    context_dim=st.integers(4, 80),
    adm=st.one_of(st.none(), st.integers(1, 100)),
    linear=st.booleans(),
    in_channels=st.integers(1, 9),
)


@settings(max_examples=40, deadline=None)
@given(unet_configs)
def test_inferred_config_reproduces_any_sgm_config_it_was_built_from(case):
    levels = len(case["channel_mult"])
    attention = [2**level for level in range(levels) if case["attention_mask"] >> level & 1]
    depth = [case["depth"] + level if 2**level in attention else 0 for level in range(levels)]
    params = dict(
        in_channels=case["in_channels"],
        out_channels=4,
        model_channels=case["model_channels"],
        channel_mult=case["channel_mult"],
        num_res_blocks=case["num_res_blocks"],
        attention_resolutions=attention,
        transformer_depth=depth,
        transformer_depth_middle=case["middle"],
        context_dim=case["context_dim"],
        num_head_channels=32,
        use_linear_in_transformer=case["linear"],
        use_spatial_transformer=True,
        legacy=False,
    )
    if case["adm"]:
        params.update(adm_in_channels=case["adm"], num_classes="sequential")
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in SgmUNet(**params).state_dict().items()}
    config = infer_unet_config(shapes, num_head_channels=32)
    assert config.channel_mult == tuple(case["channel_mult"])
    assert config.num_res_blocks == (case["num_res_blocks"],) * levels
    assert config.transformer_depth == tuple(depth)
    assert config.transformer_depth_middle == case["middle"]
    assert config.context_dim == case["context_dim"]
    assert config.adm_in_channels == case["adm"]
    assert config.in_channels == case["in_channels"]
    assert config.use_linear_in_transformer == case["linear"]
    with torch.device("meta"):
        rebuilt = SgmUNet(**config.as_sgm_params()).state_dict()
    assert {key: tuple(value.shape) for key, value in rebuilt.items()} == shapes


def test_levels_with_different_residual_block_counts_are_rebuilt_exactly():
    params = dict(
        in_channels=4, out_channels=4, model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 2, 1],
        attention_resolutions=[2, 4], transformer_depth=[0, 1, 2], context_dim=16, num_head_channels=32,
        use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
    )
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in SgmUNet(**params).state_dict().items()}
    config = infer_unet_config(shapes, num_head_channels=32)
    assert config.num_res_blocks == (1, 2, 1)
    assert config.as_sgm_params()["num_res_blocks"] == [1, 2, 1]
    with torch.device("meta"):
        rebuilt = SgmUNet(**config.as_sgm_params()).state_dict()
    assert {key: tuple(value.shape) for key, value in rebuilt.items()} == shapes


def test_inference_names_the_missing_tensor_of_an_incomplete_unet():
    shapes = unet_shapes(fixture_table("unet_sdxl_refiner"))
    del shapes["middle_block.1.proj_in.weight"]
    with pytest.raises(CheckpointError, match="middle block"):
        infer_unet_config(shapes)
    with pytest.raises(CheckpointError, match=r"out\.2\.weight"):
        infer_unet_config({"input_blocks.0.0.weight": (320, 4, 3, 3)})


# --- classification from the header alone --------------------------------------------------------


def read_chars() -> int:
    with open("/proc/self/io") as stats:
        return next(int(line.split()[1]) for line in stats if line.startswith("rchar"))


def with_key(table: dict, key: str, shape: list[int]) -> dict:
    return {**table, key: shape}


def inpainting(table: dict) -> dict:
    key = PREFIX + "input_blocks.0.0.weight"
    return with_key(table, key, [table[key][0], 9, 3, 3])


RELEASED_KINDS = [
    ("checkpoint_sdxl_refiner", lambda t: t, CheckpointKind.SDXL_REFINER),
    ("checkpoint_sdxl_base", lambda t: t, CheckpointKind.SDXL_BASE),
    ("unet_sdxl_refiner", lambda t: t, CheckpointKind.SDXL_REFINER),
    ("unet_sdxl_base", lambda t: t, CheckpointKind.SDXL_BASE),
    ("checkpoint_sdxl_base", inpainting, CheckpointKind.SDXL_INPAINT),
    ("unet_sdxl_base", inpainting, CheckpointKind.SDXL_INPAINT),
    (
        "unet_sd15",
        lambda t: with_key(t, "cond_stage_model.transformer.text_model.final_layer_norm.weight", [768]),
        CheckpointKind.SD1,
    ),
    ("unet_sd15", lambda t: t, CheckpointKind.SD1),
    (
        "unet_sd21_v",
        lambda t: with_key(t, "cond_stage_model.model.ln_final.weight", [1024]),
        CheckpointKind.SD2,
    ),
    ("unet_sd21_v", lambda t: t, CheckpointKind.SD2),
    (
        "unet_sdxl_base",
        lambda t: {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": [4608, 1536]},
        CheckpointKind.OTHER,
    ),
    ("unet_sdxl_base", lambda t: {"double_blocks.0.img_attn.qkv.weight": [9216, 3072]}, CheckpointKind.OTHER),
    ("unet_sdxl_base", lambda t: {"encoder.conv_in.weight": [128, 3, 3, 3]}, CheckpointKind.OTHER),
]


@pytest.mark.parametrize(("table", "edit", "kind"), RELEASED_KINDS)
def test_released_size_layouts_are_classified_from_the_header_without_reading_tensor_data(
    tmp_path, table, edit, kind
):
    path = write_sparse_checkpoint(tmp_path / "model.safetensors", edit(fixture_table(table)))
    with path.open("rb") as file:
        header_bytes = int.from_bytes(file.read(8), "little")
    before = read_chars()
    info = classify_checkpoint(path)
    read = read_chars() - before
    assert info.kind is kind
    assert read <= header_bytes + 64 * 1024, f"read {read} bytes from a file whose header has {header_bytes}"
    assert info.usable_as_refiner == (kind in (CheckpointKind.SDXL_REFINER, CheckpointKind.SDXL_BASE))
    assert (info.reason is None) == info.usable_as_refiner
    if not info.usable_as_refiner:
        assert "model.safetensors" in info.reason


@pytest.mark.parametrize(
    ("kind", "expected", "words"),
    [
        ("refiner", CheckpointKind.SDXL_REFINER, None),
        ("base", CheckpointKind.SDXL_BASE, None),
        ("unet_only_refiner", CheckpointKind.SDXL_REFINER, None),
        ("unet_only_base", CheckpointKind.SDXL_BASE, None),
        ("inpaint", CheckpointKind.SDXL_INPAINT, "9 input channels"),
        ("sd1", CheckpointKind.SD1, "another latent space"),
        ("sd2", CheckpointKind.SD2, "another latent space"),
    ],
)
def test_written_small_checkpoints_are_classified_by_kind_with_a_reason_when_unusable(
    tmp_path, kind, expected, words
):
    info = classify_checkpoint(write_checkpoint(tmp_path / f"{kind}.safetensors", kind))
    assert info.kind is expected
    if words is None:
        assert info.usable_as_refiner and info.reason is None and info.unet_config is not None
    else:
        assert not info.usable_as_refiner
        assert words in info.reason and f"{kind}.safetensors" in info.reason


def test_a_file_of_another_format_is_classified_other_with_the_allowed_suffixes(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    info = classify_checkpoint(path)
    assert info.kind is CheckpointKind.OTHER
    assert ".safetensors" in info.reason and "'.gguf'" in info.reason


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors.*does not exist"):
        classify_checkpoint(tmp_path / "nowhere.safetensors")


def corrupt_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:20] = b"{not json!!!"
    path.write_bytes(bytes(data))


def huge_header_length(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def truncate_tiny(path: Path) -> None:
    os.truncate(path, 5)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (corrupt_header, "corrupt safetensors header"),
        (huge_header_length, "corrupt safetensors header"),
        (truncate_half, "truncated"),
        (truncate_tiny, "too short"),
    ],
)
def test_damaged_files_are_refused_with_the_file_and_the_problem(tmp_path, damage, words):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    damage(path)
    for read in (classify_checkpoint, read_unet_state_dict):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        assert words in str(caught.value)
        assert "refiner.safetensors" in str(caught.value)


class Payload:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > '{self.marker}'",))


def test_a_pickle_that_carries_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": Payload(marker)}, path)

    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    for read in (classify_checkpoint, read_unet_state_dict):
        with pytest.raises(CheckpointError, match=r"evil\.ckpt.*refused.*safetensors"):
            read(path)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the payload is real: an ordinary unpickle runs it
    assert marker.read_text().strip() == "ran"


def test_a_ckpt_is_classified_and_read_like_its_safetensors_twin(tmp_path):
    safetensors_path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner", seed=4)
    ckpt_path = write_pickle_checkpoint(tmp_path / "refiner.ckpt", "refiner", seed=4)
    assert classify_checkpoint(ckpt_path).unet_config == classify_checkpoint(safetensors_path).unet_config
    from_ckpt = read_unet_state_dict(ckpt_path, torch.float32)
    from_safetensors = read_unet_state_dict(safetensors_path, torch.float32)
    assert from_ckpt.keys() == from_safetensors.keys()
    assert all(torch.equal(from_ckpt[key], from_safetensors[key]) for key in from_ckpt)


def test_a_legacy_format_torch_checkpoint_is_read_weights_only(tmp_path):
    state = {
        PREFIX + "input_blocks.0.0.weight": torch.ones(8, 4, 3, 3),
        "cond_stage_model.transformer.x": torch.ones(1),
    }
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    assert classify_checkpoint(path).kind is CheckpointKind.SD1
    assert torch.equal(read_unet_state_dict(path)["input_blocks.0.0.weight"], torch.ones(8, 4, 3, 3))


def test_an_sdxl_unet_for_another_latent_width_is_other_and_says_why(tmp_path):
    table = fixture_table("checkpoint_sdxl_base")
    key = PREFIX + "input_blocks.0.0.weight"
    path = write_sparse_checkpoint(tmp_path / "pix2pix.safetensors", with_key(table, key, [320, 8, 3, 3]))
    info = classify_checkpoint(path)
    assert info.kind is CheckpointKind.OTHER
    assert "8 input" in info.reason and "pix2pix.safetensors" in info.reason
