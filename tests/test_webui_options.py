"""Every WebUI option that meets the switch: img2img steps, hires passes, batches, AND, padding, CFG skips."""

from __future__ import annotations

import pytest
import torch

from tests.standin.refiner_runs import refine, traced, ui_args

LONG_PROMPT = " ".join(f"word{i}" for i in range(90))


@pytest.mark.parametrize(
    ("denoising", "fix_steps", "steps_run", "refiner_steps"),
    [(0.5, False, 6, 3), (0.3, False, 4, 2), (0.5, True, 10, 5), (0.45, False, 5, 3), (0.65, False, 7, 4)],
)
def test_img2img_splits_the_steps_it_really_runs(webui, denoising, fix_steps, steps_run, refiner_steps):
    """img2img runs int(strength·steps) + 1 steps; at 50 % an odd count gives the refiner the half step."""
    webui.write_pair()
    webui.shared.opts.img2img_fix_steps = fix_steps
    trace = traced(webui)
    p = webui.img2img(steps=10, denoising_strength=denoising)
    refine(webui, p, ui_args(steps_percent=50))
    assert p.extra_generation_params["SDXL Refiner split"] == f"base {steps_run - refiner_steps} / refiner {refiner_steps}"
    assert trace.names().count("base") == steps_run - refiner_steps
    assert trace.names().count("refiner") == refiner_steps


@pytest.mark.parametrize(("hires_pass", "refined_passes"), [("first", [True, False]), ("second", [False, True]), ("both", [True, True])])
def test_hires_fix_refines_the_passes_the_setting_names(webui, hires_pass, refined_passes):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(steps=4, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    result = refine(webui, p, ui_args(steps_percent=50, hires_pass=hires_pass))
    first_pass = trace.names()[:4]
    second_pass = trace.names()[4:]
    assert ("refiner" in first_pass) == refined_passes[0]
    assert ("refiner" in second_pass) == refined_passes[1]
    assert ("SDXL Refiner split" in p.extra_generation_params) == refined_passes[0]
    assert ("SDXL Refiner hires split" in p.extra_generation_params) == refined_passes[1]
    assert len(result.images) == 1


def test_hires_default_follows_the_webuis_own_setting(webui):
    webui.write_pair()
    webui.shared.opts.hires_fix_refiner_pass = "first pass"
    trace = traced(webui)
    p = webui.txt2img(steps=4, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    refine(webui, p, ui_args(steps_percent=50))
    assert "refiner" in trace.names()[:4]
    assert "refiner" not in trace.names()[4:]


def test_batch_size_and_count_refine_every_image_like_a_single_one(webui):
    webui.write_pair()
    single = [refine(webui, webui.txt2img(seed=seed)).samples[0] for seed in (11, 12, 13, 14)]
    batched = refine(webui, webui.txt2img(seed=11, batch_size=2, n_iter=2)).samples
    assert len(batched) == 4
    for one, many in zip(single, batched, strict=True):
        assert torch.allclose(one, many, atol=1e-5)


@pytest.mark.parametrize("option", ["pad_cond_uncond", "pad_cond_uncond_v0", None])
def test_prompts_of_different_lengths_reach_the_refiner_with_its_own_widths(webui, option):
    webui.write_pair()
    if option:
        setattr(webui.shared.opts, option, True)
    trace = traced(webui)
    result = refine(webui, webui.txt2img(prompt=LONG_PROMPT, negative_prompt="blurry"))
    assert "refiner" in trace.names()
    assert torch.isfinite(result.samples[0]).all()


def test_and_prompts_and_prompt_editing_reach_the_refiner(webui):
    webui.write_pair()
    trace = traced(webui)
    p = webui.txt2img(prompt="a [red:blue:0.5] fox AND a forest :0.7", steps=6, batch_size=2)
    result = refine(webui, p, ui_args(steps_percent=50))
    assert trace.names().count("refiner") == 3
    assert len(result.samples) == 2


@pytest.mark.parametrize(("option", "value"), [("skip_early_cond", 0.9), ("s_min_uncond_all", True)])
def test_cfg_skips_keep_working_on_refiner_calls(webui, option, value):
    webui.write_pair()
    setattr(webui.shared.opts, option, value)
    trace = traced(webui)
    p = webui.txt2img(steps=6, s_min_uncond=100.0 if option == "s_min_uncond_all" else 0.0)
    refine(webui, p, ui_args(steps_percent=50))
    refiner_rows = [rows for name, _, _, rows in trace.calls if name == "refiner"]
    assert refiner_rows
    assert "NGMS" in p.extra_generation_params or "Skip Early CFG" in p.extra_generation_params


def test_batch_cond_uncond_off_splits_refiner_calls_too(webui):
    webui.write_pair()
    webui.shared.opts.batch_cond_uncond = False
    trace = traced(webui)
    refine(webui, webui.txt2img(steps=4), ui_args(steps_percent=50))
    assert trace.names().count("refiner") == 4


def test_img2img_with_batch_count_reuses_one_sampler_without_stacking_wrappers(webui):
    webui.write_pair()
    trace = traced(webui)
    p = webui.img2img(steps=10, n_iter=2)
    p.close = lambda: None  # keep p.sampler to look at after the run
    refine(webui, p, ui_args(steps_percent=50))
    assert trace.names().count("refiner") == 2 * 3
    assert not hasattr(p.sampler.func, "__sdxl_refiner_original__")
    assert "get_sigmas" not in vars(p.sampler)


def test_hires_fix_on_both_passes_writes_each_passes_split_and_pastes_back(webui):
    from modules import infotext_utils

    from sdxl_refiner.core.infotext import settings_from_infotext
    from sdxl_refiner.core.settings import from_named

    webui.write_pair()
    p = webui.txt2img(steps=6, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    result = refine(webui, p, ui_args(steps_percent=50, hires_pass="both"))
    params = infotext_utils.parse_generation_parameters(result.infotexts[0])
    assert params["SDXL Refiner split"] == "base 3 / refiner 3"
    assert params["SDXL Refiner hires split"] == "base 2 / refiner 2"
    pasted = from_named(settings_from_infotext(params))
    assert (pasted.steps_percent, pasted.hires_pass) == (50, "both")


def test_hires_fix_on_both_passes_keeps_the_first_passes_notes_beside_the_seconds(webui):
    webui.write_pair()
    p = webui.txt2img(steps=4, enable_hr=True, hr_second_pass_steps=3, denoising_strength=0.5)
    refine(webui, p, ui_args(steps_percent=100, hires_pass="both"))
    notes = p.extra_generation_params["SDXL Refiner notes"]
    assert "The refiner runs all 4 steps" in notes and "The refiner runs all 3 steps" in notes


@pytest.mark.parametrize(("hires_pass", "keys"), [("first", {"SDXL Refiner split"}), ("second", {"SDXL Refiner hires split"})])
def test_hires_fix_on_one_pass_writes_only_that_passes_split(webui, hires_pass, keys):
    webui.write_pair()
    p = webui.txt2img(steps=4, enable_hr=True, hr_second_pass_steps=4, denoising_strength=0.5)
    refine(webui, p, ui_args(steps_percent=50, hires_pass=hires_pass))
    assert {key for key in p.extra_generation_params if key.endswith("split")} == keys


@pytest.mark.parametrize(
    ("api_auth", "auth", "status"),
    [
        (None, None, 200),
        ("alice:secret,bob:hunter2", None, 401),
        ("alice:secret,bob:hunter2", ("alice", "wrong"), 401),
        ("alice:secret,bob:hunter2", ("mallory", "secret"), 401),
        ("alice:secret,bob:hunter2", ("alice", "secret"), 200),
        ("alice:secret,bob:hunter2", ("bob", "hunter2"), 200),
    ],
)
def test_the_unload_route_asks_for_the_same_credentials_as_the_webuis_api(webui, monkeypatch, api_auth, auth, status):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sdxl_refiner.host import options

    unloads = []
    monkeypatch.setattr(webui.shared.cmd_opts, "api_auth", api_auth)
    app = FastAPI()
    options.unload_route(lambda: unloads.append(True) or ["refiner.safetensors"])(None, app)
    response = TestClient(app).post(options.UNLOAD_ROUTE, auth=auth)
    assert response.status_code == status
    assert unloads == ([True] if status == 200 else [])
    if status == 200:
        assert response.json() == {"unloaded": True, "refiners": ["refiner.safetensors"]}


def test_unloading_names_the_refiner_says_what_it_freed_and_the_next_generation_loads_it_again(webui, capsys):
    from tests.standin.refiner_runs import load_script, refine

    webui.write_pair()
    script = load_script()
    refined = refine(webui, webui.txt2img(steps=6, seed=8), script=script).samples[0]
    binding = type(script).process.__globals__["binding"]
    capsys.readouterr()
    assert list(binding.unload()) == ["refiner.safetensors"]
    said = capsys.readouterr().out
    assert "SDXL Refiner: unloaded refiner.safetensors (" in said and " GiB on cpu)" in said
    assert list(binding.unload()) == []
    assert "SDXL Refiner: unloaded no refiner" in capsys.readouterr().out
    assert (refine(webui, webui.txt2img(steps=6, seed=8), script=script).samples[0] == refined).all()
