"""The refiner's own prompt, negative prompt, CFG scale and noise, inside the one sampling loop.

Three kinds of proof, each on the real k-diffusion samplers through the stand-in WebUI:
- traces: every model call before the switch gets the same inputs whatever the controls say, and
  the raw noise the sampler draws is the same draw for draw (a multiplier scales it, never redraws);
- oracles: with a byte copy of the base as refiner at 100 %, each control must give exactly what
  the WebUI itself gives with that value as the generation's own (prompt, CFG, ``s_noise``);
- defaults and equal values give today's image bit for bit.
"""

from __future__ import annotations

import sys

import pytest
import torch

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.refiner_noise import takes_noise_sampler
from sdxl_refiner.core.samplers import NOISE_SAMPLER_LABELS, REFUSED_SAMPLER_LABELS
from tests.standin.refiner_runs import cached_refiner, refine, ui_args
from tests.test_webui_generation import ALL_SWITCHABLE, copy_of_base

EVERY_SAMPLER = [*ALL_SWITCHABLE, "DPM fast", "DPM adaptive"]
# samplers that draw fresh noise through a noise sampler (at the generation's default eta)
NOISE_ADDING = set(NOISE_SAMPLER_LABELS)
# k-diffusion computes noise * s_noise * sigma_up for these, so scaling the noise is s_noise to the bit
NOISE_EXACT = ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE"]
# these multiply s_noise in last, so scaling the noise first is the same value up to rounding
NOISE_ROUNDED = ["DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast"]

REFINER_PROMPT = "film grain, skin pores AND sharp detail :0.6"
CHANGED = {
    "prompt": {"prompt": REFINER_PROMPT},
    "negative_prompt": {"negative_prompt": "jpeg artifacts, smudge"},
    "cfg_scale": {"cfg_scale": 2.5},
    "noise_multiplier": {"noise_multiplier": 0.4},
}


class UNetInputs:
    """Every UNet call's inputs (latent, timestep, context, vector), named by the UNet that served it."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, list[torch.Tensor]]] = []
        self.handles: list = []

    def attach(self, module: torch.nn.Module, name: str) -> None:
        def record(_module, args, kwargs):
            timesteps = kwargs.get("timesteps", args[1] if len(args) > 1 else None)
            values = [args[0], timesteps, kwargs["context"], kwargs["y"]]
            self.rows.append((name, [value.detach().clone() for value in values]))

        self.handles.append(module.register_forward_pre_hook(record, with_kwargs=True))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

    def names(self) -> list[str]:
        return [name for name, _ in self.rows]


class NoiseDraws:
    """The raw noise the samplers draw: the seeded generator (``randn_like``) and Brownian trees."""

    def __init__(self, webui, monkeypatch) -> None:
        self.draws: list[torch.Tensor] = []
        rng = webui.module("modules.rng")
        original_next = rng.ImageRNG.next

        def next_noise(generator):
            noise = original_next(generator)
            self.draws.append(noise.clone())
            return noise

        monkeypatch.setattr(rng.ImageRNG, "next", next_noise)
        common = webui.module("modules.sd_samplers_common")
        original_create = common.Sampler.create_noise_sampler

        def create(sampler, x, sigmas, p):
            tree = original_create(sampler, x, sigmas, p)

            def draw(sigma, sigma_next):
                noise = tree(sigma, sigma_next)
                self.draws.append(noise.clone())
                return noise

            return draw

        monkeypatch.setattr(common.Sampler, "create_noise_sampler", create)


def traced_run(webui, p, args, copy: str):
    inputs = UNetInputs()
    inputs.attach(webui.shared.sd_model.model.diffusion_model, "base")
    inputs.attach(cached_refiner(webui, copy), "refiner")
    try:
        return refine(webui, p, args), inputs
    finally:
        inputs.detach()


@pytest.fixture
def pair(webui):
    """The released layout: a base, a refiner-type refiner sharing its text encoder, and a copy of the base."""
    webui.write_pair()
    webui.copy = copy_of_base(webui)
    return webui


def images(result) -> torch.Tensor:
    return torch.stack(result.samples)


def test_the_samplers_named_as_adding_noise_are_those_that_take_a_noise_sampler(pair):
    takes = set()
    for data in pair.sd_samplers.all_samplers:
        if data.name not in REFUSED_SAMPLER_LABELS:
            sampler = pair.sd_samplers.create_sampler(data.name, pair.shared.sd_model)
            if takes_noise_sampler(sampler.func):
                takes.add(data.name)
    assert takes == NOISE_ADDING


@pytest.mark.parametrize("sampler", EVERY_SAMPLER)
def test_the_controls_at_their_defaults_give_the_image_of_the_seven_panel_args(pair, sampler):
    seven = refine(pair, pair.txt2img(sampler_name=sampler, steps=6, seed=4), ui_args(steps_percent=50))
    defaults = ui_args(steps_percent=50, prompt="", negative_prompt="", cfg_scale=0.0, noise_multiplier=1.0)
    eleven = refine(pair, pair.txt2img(sampler_name=sampler, steps=6, seed=4), defaults)
    assert torch.equal(images(seven), images(eleven))
    assert seven.infotexts == eleven.infotexts


@pytest.mark.parametrize("sampler", EVERY_SAMPLER)
def test_a_refiner_prompt_and_cfg_equal_to_the_generations_give_the_image_of_leaving_them_empty(pair, sampler):
    fields = dict(sampler_name=sampler, steps=6, seed=5, batch_size=2, prompt="a red fox AND snow :0.7",
                  negative_prompt="blurry", cfg_scale=5.0)
    empty = refine(pair, pair.txt2img(**fields), ui_args(steps_percent=50))
    same = ui_args(steps_percent=50, prompt=fields["prompt"], negative_prompt="blurry", cfg_scale=5.0)
    equal = refine(pair, pair.txt2img(**fields), same)
    assert torch.equal(images(empty), images(equal))


@pytest.mark.parametrize("control", list(CHANGED))
@pytest.mark.parametrize("sampler", EVERY_SAMPLER)
def test_a_changed_control_changes_nothing_before_the_switch(pair, monkeypatch, sampler, control):
    noise = NoiseDraws(pair, monkeypatch)
    fields = dict(sampler_name=sampler, steps=6, seed=6)
    plain, plain_calls = traced_run(pair, pair.txt2img(**fields), ui_args(checkpoint=pair.copy, steps_percent=50),
                                    pair.copy)
    plain_noise, noise.draws = noise.draws, []
    changed_args = ui_args(checkpoint=pair.copy, steps_percent=50, **CHANGED[control])
    changed, changed_calls = traced_run(pair, pair.txt2img(**fields), changed_args, pair.copy)

    names = plain_calls.names()
    assert names == changed_calls.names()
    switch = names.index("refiner")
    assert switch > 0 and names[switch:] == ["refiner"] * (len(names) - switch)
    for index in range(switch):
        before, after = plain_calls.rows[index][1], changed_calls.rows[index][1]
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), f"call {index} changed"
    # rows are the latent once per sub-prompt, then once for the uncond: an AND prompt adds rows
    plain_latent, changed_latent = plain_calls.rows[switch][1][0], changed_calls.rows[switch][1][0]
    assert torch.equal(plain_latent[:1], changed_latent[:1]) and torch.equal(plain_latent[-1:], changed_latent[-1:])
    assert len(plain_noise) == len(noise.draws)
    assert all(torch.equal(a, b) for a, b in zip(plain_noise, noise.draws, strict=True))

    changes_image = control != "noise_multiplier" or sampler in NOISE_ADDING
    assert torch.equal(images(plain), images(changed)) is not changes_image


@pytest.mark.parametrize("sampler", EVERY_SAMPLER)
def test_at_a_full_share_the_refiners_prompts_and_cfg_are_the_generations_own(pair, sampler):
    """With the base's weights running every step, the refiner's values must act exactly as the
    generation's own values do in the WebUI: same encoding, same AND weights, same CFG."""
    own = dict(prompt=REFINER_PROMPT, negative_prompt="jpeg artifacts", cfg_scale=2.5)
    common = dict(sampler_name=sampler, steps=5, seed=7, batch_size=2)
    base_only = pair.run(pair.txt2img(**common, **own))
    args = ui_args(checkpoint=pair.copy, steps_percent=100, **own)
    refined = refine(pair, pair.txt2img(**common, prompt="a red fox", negative_prompt="blurry", cfg_scale=6.0), args)
    assert "SDXL Refiner split: base 0 / refiner " in refined.infotexts[0]
    assert torch.equal(images(base_only), images(refined))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "LMS", "DPM++ 2M", "DPM++ 2M SDE", "LCM"])
def test_a_refiner_prompt_acts_from_the_switch_on_as_prompt_editing_does(pair, sampler):
    """For samplers of one call per step, the WebUI's ``[a:b:k]`` is a on steps 0..k and b after:
    the copy with the refiner prompt b after k + 1 base steps must give the same image."""
    common = dict(sampler_name=sampler, steps=6, seed=17)
    edited = pair.run(pair.txt2img(**common, prompt="[a red fox:film grain:2]", negative_prompt="[blurry:smudge:2]"))
    args = ui_args(checkpoint=pair.copy, steps_percent=50, prompt="film grain", negative_prompt="smudge")
    refined = refine(pair, pair.txt2img(**common, prompt="a red fox", negative_prompt="blurry"), args)
    assert "SDXL Refiner split: base 3 / refiner 3" in refined.infotexts[0]
    assert torch.equal(images(edited), images(refined))


@pytest.mark.parametrize(("sampler", "exact"), [(s, True) for s in NOISE_EXACT] + [(s, False) for s in NOISE_ROUNDED])
def test_at_a_full_share_the_refiner_noise_is_k_diffusions_s_noise(pair, monkeypatch, sampler, exact):
    kdiffusion = pair.module("modules.sd_samplers_kdiffusion")
    # the WebUI hands s_noise only to some samplers; the oracle needs it for each one compared
    for funcname in ("sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                     "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_dpm_fast"):
        monkeypatch.setitem(kdiffusion.sampler_extra_params, funcname, ["s_noise"])
    common = dict(sampler_name=sampler, steps=6, seed=8)
    refined = refine(pair, pair.txt2img(**common), ui_args(checkpoint=pair.copy, steps_percent=100, noise_multiplier=0.6))
    unscaled = refine(pair, pair.txt2img(**common), ui_args(checkpoint=pair.copy, steps_percent=100))
    base_only = pair.run(pair.txt2img(**common, s_noise=0.6))
    assert not torch.equal(images(unscaled), images(refined))
    if exact:
        assert torch.equal(images(base_only), images(refined))
    else:
        torch.testing.assert_close(images(base_only), images(refined), rtol=1e-4, atol=1e-5)


def test_the_refiners_cfg_reaches_every_refiner_call_and_no_base_call(pair, monkeypatch):
    denoiser = pair.module("modules.sd_samplers_cfg_denoiser").CFGDenoiser
    original = denoiser.forward
    scales: list[tuple[str, float]] = []

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        result = original(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        slot = pair.shared.sd_model.model.diffusion_model
        scales.append(("refiner" if slot is cached_refiner(pair) else "base", cond_scale))
        return result

    monkeypatch.setattr(denoiser, "forward", forward)
    refine(pair, pair.txt2img(sampler_name="Heun", steps=6, cfg_scale=7.0), ui_args(steps_percent=50, cfg_scale=3.5))
    first = [name for name, _ in scales].index("refiner")
    assert scales == [("base", 7.0)] * first + [("refiner", 3.5)] * (len(scales) - first)


def test_img2img_and_both_hires_passes_take_the_refiners_prompt_and_cfg(pair):
    own = dict(prompt="film grain", negative_prompt="smudge", cfg_scale=3.0)
    main = dict(prompt="a red fox", negative_prompt="blurry", cfg_scale=6.0)
    args = ui_args(checkpoint=pair.copy, steps_percent=100, hires_pass="both", **own)
    hires = dict(steps=4, seed=9, enable_hr=True, hr_second_pass_steps=3, denoising_strength=0.5)
    base_only = pair.run(pair.txt2img(**hires, **own))
    refined = refine(pair, pair.txt2img(**hires, **main), args)
    assert torch.equal(images(base_only), images(refined))
    img2img = dict(steps=6, seed=10, denoising_strength=0.6)
    torch.manual_seed(0)  # the first stage samples its encoding from the global generator
    base_only = pair.run(pair.img2img(**img2img, **own))
    torch.manual_seed(0)
    refined = refine(pair, pair.img2img(**img2img, **main), args)
    assert torch.equal(images(base_only), images(refined))


@pytest.mark.parametrize("option", ["pad_cond_uncond", "s_min_uncond"])
def test_a_long_refiner_prompt_works_with_padding_and_with_skipped_unconds(pair, option):
    """A prompt past 75 tokens makes a longer cond than its negative: padded with the refiner's empty
    prompt (refiner-type), or left to the WebUI's own padding (the base copy); NGMS skips unconds."""
    long_prompt = " ".join(f"word{i}" for i in range(90))
    fields = dict(sampler_name="Euler", steps=6, seed=11, cfg_scale=5.0)
    if option == "pad_cond_uncond":
        pair.shared.opts.pad_cond_uncond = True
    else:
        fields["s_min_uncond"] = 100.0
    base_only = pair.run(pair.txt2img(**fields, prompt=long_prompt))
    copy_args = ui_args(checkpoint=pair.copy, steps_percent=100, prompt=long_prompt)
    assert torch.equal(images(base_only), images(refine(pair, pair.txt2img(**fields), copy_args)))
    refined = refine(pair, pair.txt2img(**fields), ui_args(steps_percent=50, prompt=long_prompt))
    assert not torch.equal(images(refined), images(pair.run(pair.txt2img(**fields))))


def test_the_refiner_prompt_is_encoded_once_per_generation_however_many_batches(pair):
    conditioner = pair.shared.sd_model.conditioner
    calls: list[int] = []
    conditioner.register_forward_pre_hook(lambda *_: calls.append(1))

    def encodings(n_iter: int, **own) -> int:
        calls.clear()
        refine(pair, pair.txt2img(steps=4, n_iter=n_iter, seed=12), ui_args(steps_percent=50, **own))
        return len(calls)

    assert encodings(1, prompt="grain") - encodings(1) == encodings(3, prompt="grain") - encodings(3) > 0


def test_the_refiner_prompt_is_styled_as_the_main_prompt_is(pair):
    styles = pair.shared.prompt_styles
    styles.styles["grainy"] = pair.module("modules.styles").PromptStyle("grainy", "{prompt}, film grain", "smudge")
    common = dict(steps=5, seed=13, styles=["grainy"])
    base_only = pair.run(pair.txt2img(**common, prompt="skin pores", negative_prompt="noise"))
    args = ui_args(checkpoint=pair.copy, steps_percent=100, prompt="skin pores", negative_prompt="noise")
    refined = refine(pair, pair.txt2img(**common), args)
    assert torch.equal(images(base_only), images(refined))


@pytest.mark.parametrize("comments", [True, False])
def test_comments_in_the_refiner_prompt_are_stripped_as_the_webui_strips_the_main_prompts(pair, comments):
    pair.shared.opts.enable_prompt_comments = comments
    common = dict(steps=5, seed=16)
    plain = refine(pair, pair.txt2img(**common), ui_args(checkpoint=pair.copy, steps_percent=50, prompt="film grain"))
    args = ui_args(checkpoint=pair.copy, steps_percent=50, prompt="film grain # sharp detail\n# wide\nskin")
    commented = refine(pair, pair.txt2img(**common), args)
    args = ui_args(checkpoint=pair.copy, steps_percent=50, prompt="film grain\n\nskin")
    stripped = refine(pair, pair.txt2img(**common), args)
    assert torch.equal(images(commented), images(stripped)) is comments
    assert not torch.equal(images(plain), images(stripped))


def test_a_style_that_brings_a_lora_tag_into_the_refiner_prompt_gives_the_refiner_that_lora(pair, monkeypatch):
    """The tag a style brings is the refiner's, as a style's tag in the main prompt is the base's: it is
    looked up in the host's LoRA list before any step (here the WebUI has no Lora extension loaded)."""
    monkeypatch.delitem(sys.modules, "networks", raising=False)
    styles = pair.shared.prompt_styles
    styles.styles["lora"] = pair.module("modules.styles").PromptStyle("lora", "{prompt} <lora:detail:1>", "")
    base = pair.shared.sd_model.model.diffusion_model
    with pytest.raises(SettingsError) as caught:
        refine(pair, pair.txt2img(steps=4, styles=["lora"]), ui_args(steps_percent=50, prompt="grain"))
    assert "the refiner prompt holds LoRA tags, but the host's built-in Lora extension is not loaded" in str(caught.value)
    assert pair.shared.sd_model.model.diffusion_model is base


def test_with_its_own_text_encoder_the_refiner_encodes_its_own_prompt(webui):
    """A refiner with another text encoder: its prompt and the main prompt it replaces must give the
    same refiner conds when they are the same text."""
    webui.write_checkpoint("base.safetensors", "base", seed=0)
    webui.write_checkpoint("own.safetensors", "refiner", seed=2)
    webui.load("base.safetensors")
    common = dict(sampler_name="Euler", steps=6, seed=14)
    as_main = refine(webui, webui.txt2img(**common, prompt="film grain"),
                     ui_args(checkpoint="own.safetensors", steps_percent=100))
    as_refiners = refine(webui, webui.txt2img(**common, prompt="a red fox"),
                         ui_args(checkpoint="own.safetensors", steps_percent=100, prompt="film grain"))
    main_only = refine(webui, webui.txt2img(**common, prompt="a red fox"),
                       ui_args(checkpoint="own.safetensors", steps_percent=100))
    assert torch.equal(images(as_main), images(as_refiners))
    assert not torch.equal(images(main_only), images(as_refiners))
    assert "prompts encoded with the refiner's own text encoder" in as_refiners.infotexts[0]


@pytest.mark.parametrize(("sampler", "eta", "why"), [
    ("Euler", None, "Euler adds no ancestral or SDE noise"),
    ("DPM++ 2M", None, "DPM++ 2M adds no ancestral or SDE noise"),
    ("Euler a", 0.0, "Euler a adds no noise with eta 0"),
])
def test_a_noise_that_cannot_act_says_so_and_changes_nothing(pair, sampler, eta, why):
    common = dict(sampler_name=sampler, steps=6, seed=15, eta=eta)
    plain = refine(pair, pair.txt2img(**common), ui_args(steps_percent=50))
    scaled = refine(pair, pair.txt2img(**common), ui_args(steps_percent=50, noise_multiplier=0.5))
    assert torch.equal(images(plain), images(scaled))
    note = f"refiner noise 0.5 had no effect: {why}; it scales the noise of samplers such as Euler a and DPM++ 2M SDE"
    assert f'SDXL Refiner notes: "{note}"' in scaled.infotexts[0]
    assert "SDXL Refiner noise: 0.5" in scaled.infotexts[0]


@pytest.mark.parametrize("sampler", NOISE_SAMPLER_LABELS)
def test_a_noise_that_acts_adds_no_note(pair, sampler):
    scaled = refine(pair, pair.txt2img(sampler_name=sampler, steps=6), ui_args(steps_percent=50, noise_multiplier=0.5))
    assert "SDXL Refiner noise: 0.5" in scaled.infotexts[0]
    assert "had no effect" not in scaled.infotexts[0]


def test_the_infotext_names_each_control_set_and_none_left_at_its_default(pair):
    args = ui_args(steps_percent=50, prompt="grain, pores", negative_prompt="smudge", cfg_scale=4.5,
                   noise_multiplier=0.85)
    result = refine(pair, pair.txt2img(sampler_name="Euler a", steps=6), args)
    info = result.infotexts[0]
    for written in ('SDXL Refiner prompt: "grain, pores"', "SDXL Refiner negative prompt: smudge",
                    "SDXL Refiner CFG scale: 4.5", "SDXL Refiner noise: 0.85"):
        assert written in info
    plain = refine(pair, pair.txt2img(sampler_name="Euler a", steps=6), ui_args(steps_percent=50)).infotexts[0]
    assert "SDXL Refiner split" in plain
    assert not any(f"SDXL Refiner {key}" in plain for key in ("prompt", "negative prompt", "CFG scale", "noise"))
