"""A refiner whose text encoder is not the base's gets the prompts encoded by its own encoder."""

from __future__ import annotations

import torch

from tests.standin.refiner_runs import CallTrace, cached_refiner, refine, ui_args


def write_stranger(webui) -> str:
    webui.write_pair()
    webui.write_checkpoint("stranger.safetensors", "refiner", seed=5)
    return "stranger.safetensors"


def own_encoding(webui, name: str, prompt: str, width: int = 64, height: int = 64) -> dict:
    """What the refiner checkpoint's own conditioner makes of the prompt (stand-in sgm model)."""
    prompt_parser = webui.module("modules.prompt_parser")
    engine = webui.sd_models.build_model(webui.checkpoint(name))
    return engine.get_learned_conditioning(prompt_parser.SdConditioning([prompt], width=width, height=height))


def test_refiner_calls_get_the_pooled_text_of_the_refiners_own_encoder(webui):
    name = write_stranger(webui)
    assert "model.token_embedding.wrapped.weight" in webui.shared.sd_model.conditioner.embedders[1].state_dict()
    trace = CallTrace()
    trace.attach(cached_refiner(webui, name), "refiner")
    result = refine(webui, webui.txt2img(steps=4, prompt="a red fox"), ui_args(checkpoint=name, steps_percent=50))
    expected = own_encoding(webui, name, "a red fox")
    pooled = expected["vector"].shape[1] - 2 * 2 * webui.shared.sd_model.conditioner.embedders[-1].outdim - 8
    vector = next(y for who, y in trace.vectors if who == "refiner")
    assert torch.allclose(vector[0, :pooled], expected["vector"][0, :pooled], atol=1e-5)
    assert "SDXL Refiner notes: prompts encoded with the refiner's own text encoder" in result.infotexts[0]


def test_two_refiners_with_encoders_of_their_own_each_encode_with_their_own(webui):
    """The encoder is kept for the next generation, but only for the file it came from."""
    first = write_stranger(webui)
    second = "stranger-2.safetensors"
    webui.write_checkpoint(second, "refiner", seed=6)
    for name in (first, second):
        trace = CallTrace()
        trace.attach(cached_refiner(webui, name), "refiner")
        refine(webui, webui.txt2img(steps=4, prompt="a red fox"), ui_args(checkpoint=name, steps_percent=50))
        expected = own_encoding(webui, name, "a red fox")
        pooled = expected["vector"].shape[1] - 2 * 2 * webui.shared.sd_model.conditioner.embedders[-1].outdim - 8
        vector = next(y for who, y in trace.vectors if who == "refiner")
        assert torch.allclose(vector[0, :pooled], expected["vector"][0, :pooled], atol=1e-5), name


def test_own_encoding_follows_prompt_editing_and_differs_from_slicing_the_base(webui):
    name = write_stranger(webui)
    shared = refine(webui, webui.txt2img(steps=6, prompt="a [red:blue:3] fox"), ui_args(steps_percent=50)).samples[0]
    own = refine(webui, webui.txt2img(steps=6, prompt="a [red:blue:3] fox"), ui_args(checkpoint=name, steps_percent=50)).samples[0]
    assert torch.isfinite(own).all()
    assert not torch.equal(shared, own)


def test_encoding_with_the_refiners_encoder_leaves_the_base_encoder_and_next_generation_clean(webui):
    name = write_stranger(webui)
    encoder = webui.shared.sd_model.conditioner.embedders[1]
    weights = {k: v for k, v in encoder.state_dict(keep_vars=True).items()}
    clean = webui.run(webui.txt2img(seed=71)).samples[0]
    refine(webui, webui.txt2img(seed=71), ui_args(checkpoint=name))
    assert all(encoder.state_dict(keep_vars=True)[k] is v for k, v in weights.items())
    assert torch.equal(webui.run(webui.txt2img(seed=71)).samples[0], clean)


def test_own_encoding_works_under_lowvram(webui):
    webui.shared.cmd_opts.lowvram = True
    name = write_stranger(webui)
    result = refine(webui, webui.txt2img(steps=4), ui_args(checkpoint=name, steps_percent=50))
    assert torch.isfinite(result.samples[0]).all()
    assert webui.lowvram.module_in_gpu is None or webui.lowvram.module_in_gpu is not webui.shared.sd_model.conditioner
