"""In the WebUI, the refiner UNet is built from the config the WebUI builds that checkpoint with:
the same-name .yaml beside it, else the WebUI's config for its type."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sdxl_refiner.core.errors import CheckpointError
from tests.standin.refiner_runs import cached_refiner, refine, ui_args
from tests.support.checkpoints import write_checkpoint
from tests.support.sgm_unet import heads_of


def base_copy_with_heads(webui, head_channels: int, name: str = "copy8.safetensors") -> str:
    """A base loaded from its own .yaml with ``head_channels``-wide heads, and a byte copy of it
    (with the same .yaml) to use as the refiner."""
    widths = dataclasses.replace(webui.sgm.TinySdxlWidths(), base_head_channels=head_channels)
    webui.write_checkpoint("base8.safetensors", "base", seed=0, widths=widths)
    assert (webui.models_dir / "base8.yaml").is_file()
    webui.write_checkpoint("refiner.safetensors", "refiner", seed=1, text_encoder_of="base8.safetensors")
    webui.load("base8.safetensors")
    webui.write_checkpoint(name, engine=webui.shared.sd_model)
    return name


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M SDE", "Heun"])
def test_a_base_built_from_its_own_yaml_refines_exactly_with_a_copy_of_itself(webui, sampler):
    copy = base_copy_with_heads(webui, 8)
    assert heads_of(webui.shared.sd_model.model.diffusion_model) == {(8, 8)}
    base_only = webui.run(webui.txt2img(sampler_name=sampler, steps=6, seed=4)).samples
    refined = refine(webui, webui.txt2img(sampler_name=sampler, steps=6, seed=4), ui_args(checkpoint=copy, steps_percent=50))
    assert heads_of(cached_refiner(webui, copy)) == {(8, 8)}
    assert torch.equal(torch.stack(base_only), torch.stack(refined.samples))


def test_without_a_yaml_beside_it_the_refiner_is_built_from_the_webuis_config_for_its_type(webui):
    webui.write_pair()
    widths = webui.sgm.TinySdxlWidths()
    assert not (webui.models_dir / "refiner.yaml").exists()
    assert widths.refiner_head_channels not in (64, widths.base_head_channels)
    heads = 64 // widths.refiner_head_channels
    assert heads_of(cached_refiner(webui)) == {(heads, widths.refiner_head_channels)}


def test_a_yaml_beside_the_refiner_wins_over_the_webuis_config_for_its_type(webui):
    webui.write_pair()
    params = {**webui.type_configs["refiner"], "num_head_channels": 8}
    webui.sgm.write_config(params, webui.models_dir / "refiner.yaml")
    assert heads_of(cached_refiner(webui)) == {(8, 8)}


def test_an_edited_yaml_builds_the_refiner_again(webui):
    webui.write_pair()
    first = cached_refiner(webui)
    webui.sgm.write_config({**webui.type_configs["refiner"], "num_head_channels": 8}, webui.models_dir / "refiner.yaml")
    refine(webui, webui.txt2img(steps=4))
    assert heads_of(cached_refiner(webui)) == {(8, 8)} and cached_refiner(webui) is not first


def test_a_yaml_that_contradicts_the_weights_is_refused_before_any_step(webui):
    webui.write_pair()
    webui.sgm.write_config({**webui.type_configs["refiner"], "model_channels": 48}, webui.models_dir / "refiner.yaml")
    calls = []
    webui.shared.sd_model.model.diffusion_model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(CheckpointError) as caught:
        refine(webui, webui.txt2img(steps=4))
    message = str(caught.value)
    assert "model_channels is 48 in the config and 32 in the weights" in message
    assert "its config refiner.yaml" in message and str(webui.models_dir) not in message
    assert calls == [], "refused before the base ran a step"


def test_a_type_config_that_does_not_describe_the_file_says_to_put_a_yaml_beside_it(webui):
    webui.write_pair()
    webui.sgm.write_config({**webui.type_configs["refiner"], "context_dim": 80}, webui.sd_models_config.config_sdxl_refiner)
    with pytest.raises(CheckpointError) as caught:
        refine(webui, webui.txt2img(steps=4))
    message = str(caught.value)
    assert "the WebUI's sd_xl_refiner.yaml" in message and "context_dim is 80" in message
    assert message.endswith(
        "To fix it: this is not a released SDXL refiner, so put a .yaml of its own name that describes it beside "
        "the checkpoint (the WebUI builds the file from that), or choose another checkpoint."
    )


def test_a_yaml_beside_that_contradicts_the_weights_says_to_correct_that_yaml(webui):
    webui.write_pair()
    webui.sgm.write_config({**webui.type_configs["refiner"], "context_dim": 80}, webui.models_dir / "refiner.yaml")
    with pytest.raises(CheckpointError) as caught:
        refine(webui, webui.txt2img(steps=4))
    assert str(caught.value).endswith(
        "To fix it: correct refiner.yaml (the WebUI builds the checkpoint from it too), or remove it when the "
        "checkpoint is a released SDXL model."
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("model: [unclosed", "cannot read its config refiner.yaml"),
        ("model:\n  target: x\n", "it has no model.params.network_config.params, which an SDXL config has"),
        ("model:\n  params:\n    network_config:\n      target: x\n", "no model.params.network_config.params"),
    ],
)
def test_an_unreadable_yaml_is_refused_naming_it(webui, text, why):
    webui.write_pair()
    (webui.models_dir / "refiner.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=why):
        refine(webui, webui.txt2img(steps=4))


def test_a_unet_only_refiner_without_a_yaml_is_built_from_its_shapes_and_with_one_from_it(webui):
    from sdxl_refiner.bindings.webui import model_config
    from sdxl_refiner.host import checkpoints

    webui.write_pair()
    path = write_checkpoint(webui.models_dir / "unet-only.safetensors", "unet_only_refiner")
    webui.sd_models.list_models()
    info = webui.checkpoint("unet-only.safetensors")
    assert model_config.host_unet_config(info, checkpoints.classify_refiner(info).info) is None
    webui.sgm.write_config({"num_head_channels": 16}, path.with_suffix(".yaml"))
    found = model_config.host_unet_config(info, checkpoints.classify_refiner(info).info)
    assert found.params == {"num_head_channels": 16, "use_checkpoint": False}


def test_an_unreadable_yaml_names_the_error_and_the_fix(webui):
    webui.write_pair()
    (webui.models_dir / "refiner.yaml").write_text("model:\n  target: x\n")
    with pytest.raises(CheckpointError) as caught:
        refine(webui, webui.txt2img(steps=4))
    assert str(caught.value) == (
        "SDXL Refiner cannot read its config refiner.yaml: ValueError: it has no model.params.network_config.params, "
        "which an SDXL config has. Correct the .yaml, or remove it when the checkpoint is a released SDXL model "
        "(the WebUI's own config then applies)."
    )


def test_network_params_that_are_not_a_mapping_are_refused(webui):
    webui.write_pair()
    (webui.models_dir / "refiner.yaml").write_text("model:\n  params:\n    network_config:\n      params: [1, 2]\n")
    with pytest.raises(CheckpointError) as caught:
        refine(webui, webui.txt2img(steps=4))
    assert str(caught.value) == "SDXL Refiner cannot read its config refiner.yaml: its network_config.params is not a mapping."


def test_interpolations_in_the_yaml_are_resolved_as_omegaconf_resolves_them(webui):
    from sdxl_refiner.bindings.webui import model_config
    from sdxl_refiner.host import checkpoints

    webui.write_pair()
    text = webui.sgm.engine_config({**webui.type_configs["refiner"], "num_head_channels": "${heads}"})
    (webui.models_dir / "refiner.yaml").write_text(json.dumps({**text, "heads": 8}))
    info = webui.checkpoint("refiner.safetensors")
    assert model_config.host_unet_config(info, checkpoints.classify_refiner(info).info).params["num_head_channels"] == 8
    assert heads_of(cached_refiner(webui)) == {(8, 8)}


def test_a_webui_without_a_config_for_the_type_builds_the_refiner_from_its_shapes(webui):
    from sdxl_refiner.bindings.webui import model_config
    from sdxl_refiner.host import checkpoints

    webui.write_pair()
    del webui.sd_models_config.config_sdxl_refiner
    info = webui.checkpoint("refiner.safetensors")
    assert model_config.host_unet_config(info, checkpoints.classify_refiner(info).info) is None


def test_without_the_webuis_type_config_the_refiner_is_built_from_its_shapes(webui):
    from sdxl_refiner.bindings.webui import model_config
    from sdxl_refiner.host import checkpoints

    webui.write_pair()
    webui.sd_models_config.config_sdxl_refiner = str(webui.models_dir / "absent.yaml")
    info = webui.checkpoint("refiner.safetensors")
    assert model_config.host_unet_config(info, checkpoints.classify_refiner(info).info) is None


def test_the_webuis_inference_overrides_are_applied_to_the_config(webui):
    from sdxl_refiner.bindings.webui import model_config
    from sdxl_refiner.host import checkpoints

    webui.write_pair()
    info = webui.checkpoint("refiner.safetensors")
    found = model_config.host_unet_config(info, checkpoints.classify_refiner(info).info)
    assert webui.type_configs["refiner"]["use_checkpoint"] is True
    assert found.params == {**webui.type_configs["refiner"], "use_checkpoint": False}
