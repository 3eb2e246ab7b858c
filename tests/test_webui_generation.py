"""The refiner runs inside the WebUI's own sampling loop: the right call, the right conds, one loop."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sdxl_refiner.core.conditioning import timestep_embedding
from sdxl_refiner.core.samplers import REFUSED_SAMPLER_LABELS
from sdxl_refiner.core.schedule import switch_point
from tests.standin.refiner_runs import CallTrace, cached_refiner, refine, traced, ui_args

ALL_SWITCHABLE = ["Euler", "Euler a", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE",
                  "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "LCM", "DDIM", "PLMS"]



def test_every_sampler_the_webui_lists_is_either_switched_exactly_or_refused(webui):
    listed = {sampler.name for sampler in webui.sd_samplers.all_samplers}
    refused = set(REFUSED_SAMPLER_LABELS)
    assert listed - refused == set(ALL_SWITCHABLE) | {"DPM fast", "DPM adaptive"}
    assert refused <= listed


# samplers that draw noise get more seeds: Brownian-tree and ancestral noise must survive the switch
MORE_SEEDS = {"Euler a": (3, 4, 5), "DPM++ 2M SDE": (3, 4, 5), "DPM++ SDE": (3, 4)}


def copy_of_base(webui, name: str = "copy.safetensors") -> str:
    """The loaded base's weights under another name: a refiner that must change nothing."""
    webui.write_checkpoint(name, engine=webui.shared.sd_model)
    return name


@pytest.mark.parametrize("sampler", ALL_SWITCHABLE)
def test_refiner_with_the_base_weights_gives_the_image_of_base_only_bit_for_bit(webui, sampler):
    webui.write_pair()
    copy = copy_of_base(webui)
    trace = CallTrace()
    trace.attach(cached_refiner(webui, copy), "refiner")
    for seed in MORE_SEEDS.get(sampler, (3,)):
        base_only = webui.run(webui.txt2img(sampler_name=sampler, steps=6, seed=seed)).samples
        calls_before = len(trace.calls)
        refined = refine(webui, webui.txt2img(sampler_name=sampler, steps=6, seed=seed), ui_args(checkpoint=copy, steps_percent=50))
        assert len(trace.calls) > calls_before, f"seed {seed}: the refiner UNet never ran, so this case proves nothing"
        assert torch.equal(torch.stack(base_only), torch.stack(refined.samples))


@pytest.mark.parametrize("sampler", ["Euler", "Heun", "DPM++ 2M SDE", "DPM2 a"])
def test_the_refiner_takes_every_call_from_the_first_refiner_step_on_and_none_before(webui, sampler):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name=sampler, steps=10)
    refine(webui, p, ui_args(steps_percent=30))
    names = trace.names()
    first = names.index("refiner")
    assert names == ["base"] * first + ["refiner"] * (len(names) - first)
    assert p.extra_generation_params["SDXL Refiner split"] == "base 7 / refiner 3"


def test_the_switch_call_is_the_one_the_plan_names_for_the_schedule_actually_run(webui):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name="Heun", steps=8)
    sampler = webui.sd_samplers.create_sampler("Heun", webui.shared.sd_model)
    sigmas = sampler.get_sigmas(p, 8)
    refine(webui, p, ui_args(steps_percent=25))
    expected = switch_point("sample_heun", sigmas, 6)
    assert trace.names().index("refiner") == expected.call_index


def test_refiner_calls_get_the_refiner_widths_and_the_aesthetic_scores(webui):
    webui.write_pair()
    trace = traced(webui)
    refine(webui, webui.txt2img(steps=5, batch_size=2), ui_args(steps_percent=40, aesthetic_score=7.0, negative_aesthetic_score=1.5))
    widths = {name: (context, vector) for name, _, context, vector in trace.calls}
    refiner_unet = cached_refiner(webui)
    assert widths["refiner"] == (refiner_unet.input_blocks[-1][1].transformer_blocks[0].attn2.to_k.in_features,
                                 refiner_unet.label_emb[0][0].in_features)
    assert widths["base"] != widths["refiner"]
    vector = next(y for name, y in trace.vectors if name == "refiner")
    dim = webui.shared.sd_model.conditioner.embedders[-1].outdim
    assert torch.allclose(vector[:2, -dim:], timestep_embedding(torch.tensor([7.0]), dim).expand(2, -1))
    assert torch.allclose(vector[2:, -dim:], timestep_embedding(torch.tensor([1.5]), dim).expand(2, -1))


def test_zero_percent_changes_nothing_not_even_the_infotext(webui):
    webui.write_pair()
    off = webui.run(webui.txt2img(seed=5))
    zero = refine(webui, webui.txt2img(seed=5), ui_args(steps_percent=0))
    assert torch.equal(torch.stack(off.samples), torch.stack(zero.samples))
    assert off.infotexts == zero.infotexts


def test_refined_image_differs_from_base_only_and_repeats_exactly(webui):
    webui.write_pair()
    base_only = webui.run(webui.txt2img(seed=9)).samples[0]
    first = refine(webui, webui.txt2img(seed=9)).samples[0]
    second = refine(webui, webui.txt2img(seed=9)).samples[0]
    assert not torch.equal(base_only, first)
    assert torch.equal(first, second)


@pytest.mark.parametrize("sampler", ["DPM fast", "DPM adaptive"])
def test_samplers_without_a_step_list_switch_once_by_sigma_and_never_back(webui, sampler):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name=sampler, steps=6)
    result = refine(webui, p, ui_args(steps_percent=50))
    names = trace.names()
    first = names.index("refiner")
    assert first > 0
    assert names[first:] == ["refiner"] * (len(names) - first)
    sigma_at_switch = trace.calls[first][1]
    assert all(timestep > sigma_at_switch for _, timestep, *_ in trace.calls[:first])
    assert "SDXL Refiner split: base 3 / refiner 3" in result.infotexts[0]
    assert "did not run" not in result.infotexts[0]


def test_the_infotext_names_the_refiner_and_the_split(webui):
    webui.write_pair()
    result = refine(webui, webui.txt2img(steps=10), ui_args(steps_percent=30))
    info = webui.checkpoint("refiner.safetensors")
    assert f"SDXL Refiner: {info.short_title}" in result.infotexts[0]
    assert "SDXL Refiner split: base 7 / refiner 3" in result.infotexts[0]


def test_the_infotext_carries_the_hash_of_a_refiner_the_webui_had_not_hashed(webui):
    webui.write_pair()
    path = webui.models_dir / "refiner.safetensors"
    assert webui.checkpoint("refiner.safetensors").shorthash is None
    result = refine(webui, webui.txt2img(steps=4))
    shorthash = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert f"SDXL Refiner: refiner [{shorthash}]," in result.infotexts[0]
    assert webui.checkpoint(f"refiner [{shorthash}]").shorthash == shorthash


def test_with_no_hashing_the_infotext_names_the_refiner_without_a_hash(webui):
    webui.write_pair()
    webui.shared.cmd_opts.no_hashing = True
    result = refine(webui, webui.txt2img(steps=4))
    assert "SDXL Refiner: refiner," in result.infotexts[0]


@pytest.mark.parametrize(("sampler", "first_refiner_call"), [("DDIM", 7), ("PLMS", 8)])
def test_timestep_samplers_switch_after_the_base_steps_of_their_own_loop(webui, sampler, first_refiner_call):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name=sampler, steps=11)
    refine(webui, p, ui_args(steps_percent=40))
    assert p.extra_generation_params["SDXL Refiner split"] == "base 7 / refiner 4"  # 12 timesteps: 11 steps
    names = trace.names()
    assert names.index("refiner") == first_refiner_call
    assert names[first_refiner_call:] == ["refiner"] * (len(names) - first_refiner_call)


def test_dpm_fast_that_never_reaches_the_switch_says_the_refiner_did_not_run(webui, capsys):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name="DPM fast", steps=4)
    result = refine(webui, p, ui_args(steps_percent=20))
    assert "refiner" not in trace.names() and "base" in trace.names()
    notes = p.extra_generation_params["SDXL Refiner notes"]
    assert "DPM fast" in notes and "refiner did not run" in notes and "more steps" in notes
    assert "refiner did not run" in result.infotexts[0]
    assert "DPM fast" in capsys.readouterr().out


def test_stop_after_this_image_still_says_the_refiner_did_not_run(webui):
    """Unlike an interrupt, "stop generating" lets the pass run to its end, so its image is whole
    and its infotext must say what ran."""
    webui.write_pair()

    stops = []

    def stop_after_this_image(params):
        webui.shared.state.stop_generating()
        stops.append(webui.shared.state.stopping_generation)

    webui.script_callbacks.on_cfg_denoiser(stop_after_this_image)
    p = webui.txt2img(sampler_name="DPM fast", steps=4)
    refine(webui, p, ui_args(steps_percent=20))
    assert stops and all(stops)
    assert "refiner did not run" in p.extra_generation_params["SDXL Refiner notes"]


def test_a_missed_switch_in_the_hires_pass_is_named_as_the_hires_pass(webui, capsys):
    webui.write_pair()
    p = webui.txt2img(sampler_name="DPM fast", steps=10, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    refine(webui, p, ui_args(steps_percent=20, hires_pass="second"))
    notes = p.extra_generation_params["SDXL Refiner notes"]
    assert notes.startswith("hires pass: DPM fast never came down") and notes.count("did not run") == 1
    assert "SDXL Refiner: hires pass: DPM fast" in capsys.readouterr().out


def test_dpm_fast_that_reaches_the_switch_adds_no_note(webui):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(sampler_name="DPM fast", steps=10)
    refine(webui, p, ui_args(steps_percent=20))
    assert "refiner" in trace.names()
    assert "SDXL Refiner notes" not in p.extra_generation_params


def test_an_eta_that_makes_each_dpm2_a_step_one_call_moves_the_switch_with_it(webui):
    """With eta this large DPM2 a's ancestral step ends at sigma_down 0 on every step, so it makes
    one call per step instead of two: the switch is planned with the generation's own eta."""
    webui.write_pair()
    trace = traced(webui)
    refine(webui, webui.txt2img(sampler_name="DPM2 a", steps=6, eta=100.0), ui_args(steps_percent=50))
    assert trace.names() == ["base"] * 3 + ["refiner"] * 3


def test_a_request_that_meets_the_model_before_the_webui_computed_its_empty_prompt_still_refines(webui):
    """Right after the start the WebUI serves requests while it finishes loading the model (seen live)."""
    webui.write_pair()
    expected = refine(webui, webui.txt2img(steps=4)).samples[0]
    del webui.shared.sd_model.cond_stage_model_empty_prompt
    assert (refine(webui, webui.txt2img(steps=4)).samples[0] == expected).all()
