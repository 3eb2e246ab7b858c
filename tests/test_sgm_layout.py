"""The test UNet has generative-models' exact state-dict layout and runs like sgm's UNetModel."""

import json
import math
from pathlib import Path

import pytest
import torch

from sdxl_refiner.core.checkpoint import load_unet
from sdxl_refiner.core.unet_config import HostUNetConfig
from tests.support.checkpoints import random_unet_state, small_unet_params, write_checkpoint
from tests.support.real_sgm import SgmUnavailable, unet_model_class
from tests.support.released import RELEASED
from tests.support.sgm_unet import SgmUNet, timestep_embedding

FIXTURES = Path(__file__).resolve().parent / "fixtures"



def fixture_table(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["base", "refiner"])
def test_meta_build_of_released_config_has_exactly_the_released_keys_and_shapes(name):
    with torch.device("meta"):
        unet = SgmUNet(**RELEASED[name])
    built = {f"model.diffusion_model.{key}": list(value.shape) for key, value in unet.state_dict().items()}
    assert built == fixture_table(f"unet_sdxl_{name}")


def test_small_refiner_runs_and_each_conditioning_input_changes_the_output():
    params = small_unet_params("refiner")
    unet = SgmUNet(**params)
    for parameter in unet.parameters():
        torch.nn.init.normal_(parameter, std=0.05, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 5, params["context_dim"], generator=generator)
    y = torch.randn(2, params["adm_in_channels"], generator=generator)
    t = torch.tensor([10.0, 700.0])
    out = unet(x, t, context=context, y=y)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, unet(x, t, context=context + 1, y=y))
    assert not torch.allclose(out, unet(x, t, context=context, y=y + 1))
    assert not torch.allclose(out, unet(x, t + 100, context=context, y=y))


def test_output_of_a_row_does_not_depend_on_the_other_rows_of_the_batch():
    params = small_unet_params("base")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        unet = SgmUNet(**params)
    x = torch.randn(3, 4, 8, 8)
    context = torch.randn(3, 4, params["context_dim"])
    y = torch.randn(3, params["adm_in_channels"])
    t = torch.tensor([1.0, 2.0, 3.0])
    full = unet(x, t, context=context, y=y)
    single = unet(x[1:2], t[1:2], context=context[1:2], y=y[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dim", [2, 8, 256, 320, 7])
def test_timestep_embedding_is_sgm_cos_then_sin_with_geometric_frequencies(dim):
    values = torch.tensor([0.0, 1.0, 6.0, 999.0, 1024.0])
    half = dim // 2
    expected = torch.zeros(len(values), dim)
    for row, value in enumerate(values.tolist()):
        for k in range(half):
            frequency = math.exp(-math.log(10000) * k / half)
            expected[row, k] = math.cos(value * frequency)
            expected[row, half + k] = math.sin(value * frequency)
    torch.testing.assert_close(timestep_embedding(values, dim), expected, rtol=0, atol=2e-4)


def test_unet_refuses_y_when_it_has_no_label_embedding():
    unet = SgmUNet(**small_unet_params("sd2"))
    with pytest.raises(ValueError, match="class-conditional"):
        unet(torch.zeros(1, 4, 8, 8), torch.zeros(1), context=torch.zeros(1, 2, 1024), y=torch.zeros(1, 4))


@pytest.fixture(scope="module")
def real_unet_model() -> type:
    try:
        return unet_model_class()
    except SgmUnavailable as missing:
        pytest.skip(f"generative-models' UNetModel cannot be had here: {missing}")


HEAD_SETTINGS = {
    "family 64": {},
    "16-wide heads": {"num_head_channels": 16},
    "4 heads": {"num_head_channels": -1, "num_heads": 4},
    "legacy 24": {"num_head_channels": 24, "legacy": True},
}


def run_both(ours: torch.nn.Module, theirs: torch.nn.Module, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 7, params["context_dim"], generator=generator)
    y = torch.randn(2, params["adm_in_channels"], generator=generator) if "adm_in_channels" in params else None
    t = torch.tensor([3.0, 801.0])
    with torch.no_grad():
        return ours(x, t, context=context, y=y), theirs(x, timesteps=t, context=context, y=y)


@pytest.mark.parametrize("heads", HEAD_SETTINGS, ids=list(HEAD_SETTINGS))
@pytest.mark.parametrize("kind", ["refiner", "base", "sd2"])
def test_same_layout_and_output_as_generative_models_unet(real_unet_model, kind, heads):
    params = {**small_unet_params(kind), **HEAD_SETTINGS[heads]}
    state = random_unet_state(params, seed=1, scale=0.1)
    theirs = real_unet_model(**params).eval()
    ours = SgmUNet(**params).eval()
    theirs.load_state_dict(state)
    ours.load_state_dict(state)
    torch.testing.assert_close(*run_both(ours, theirs, params))


@pytest.mark.parametrize("name", ["base", "refiner"])
def test_generative_models_builds_the_released_layout_from_the_released_config(real_unet_model, name):
    with torch.device("meta"):
        layout = {key: list(value.shape) for key, value in real_unet_model(**RELEASED[name]).state_dict().items()}
    assert {f"model.diffusion_model.{key}": shape for key, shape in layout.items()} == fixture_table(f"unet_sdxl_{name}")


def test_the_config_rule_loads_a_checkpoint_into_generative_models_unet_with_the_configs_heads(real_unet_model, tmp_path):
    """The refiner is loaded as the binding loads it, with the real class: the config's head width
    (16, which the weights do not show) is what the built UNet computes with."""
    params = {**small_unet_params("refiner"), "num_head_channels": 16, "use_checkpoint": False}
    state = random_unet_state(params, seed=2, scale=0.2)
    path = write_checkpoint(tmp_path / "refiner16.safetensors", "refiner", unet_state=state)
    loaded = load_unet(
        path, lambda kwargs: real_unet_model(**kwargs), torch.float32,
        host_config=HostUNetConfig.from_params("refiner16.yaml", params),
    )
    reference = SgmUNet(**params).eval()
    reference.load_state_dict(loaded.state_dict())
    torch.testing.assert_close(*run_both(reference, loaded, params))
    by_shapes = load_unet(path, lambda kwargs: real_unet_model(**kwargs), torch.float32)
    ours_out, shapes_out = run_both(reference, by_shapes, params)
    assert not torch.allclose(ours_out, shapes_out), "built with the family's 64, it computes something else"
