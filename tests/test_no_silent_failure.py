"""A failure of any kind in our hooks is never an unrefined image without a word.

The hosts swallow exceptions from Script hooks, so a bug of ours there would return the base-only
image. Each step is broken here (in the stand-in, exhaustively; tests/live/faults.py does it in each
real host): before the first step the generation stops with our message; where the sampler
cannot be hooked the infotext says the refiner did not run; the base is always back in place.
"""

from __future__ import annotations

import importlib

import pytest
from fastapi.exceptions import HTTPException

from tests.standin.refiner_runs import assert_restored, load_script, refine, snapshot, ui_args


def fresh(module: str):
    """The extension's modules as this test's stand-in WebUI loads them (each test imports them anew)."""
    return importlib.import_module(module)


def refiner_failed():
    return fresh("sdxl_refiner.host.sampling").RefinerFailed


def injected(step: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"injected failure in {step}")

    return fail


@pytest.mark.parametrize(
    ("owner", "attribute", "while_doing"),
    [
        ("sdxl_refiner.host.file_hash", "refiner_hash", "preparing the generation"),
        ("sdxl_refiner.core.samplers", "sigmas_used", "planning the sampling pass"),
    ],
)
def test_an_unexpected_error_before_the_first_step_stops_the_generation_with_our_message(
    webui, monkeypatch, capsys, owner, attribute, while_doing
):
    webui.write_pair()
    before = snapshot(webui)
    monkeypatch.setattr(fresh(owner), attribute, injected(attribute))
    with pytest.raises(refiner_failed()) as raised:
        refine(webui, webui.txt2img(steps=6))
    message = str(raised.value)
    assert message.startswith(f"SDXL Refiner failed while {while_doing}: RuntimeError: injected failure in {attribute}.")
    assert "Turn SDXL Refiner off" in message
    assert isinstance(raised.value.__cause__, RuntimeError), "the failure keeps the error it stands for"
    assert raised.value.status_code == 500 and not isinstance(raised.value, HTTPException), (
        "a failure is a 5xx that the host's API answers with its traceback")
    console = capsys.readouterr().err
    assert "Traceback" in console and f"RuntimeError: injected failure in {attribute}" in console, (
        "the console keeps the traceback")
    assert_restored(webui, before)


def test_an_unexpected_error_in_the_bindings_work_before_the_pass_stops_the_generation(webui, monkeypatch):
    webui.write_pair()
    script = load_script()
    binding_class = type(script_globals(script)["binding"])
    monkeypatch.setattr(binding_class, "before_pass", injected("before_pass"))
    with pytest.raises(refiner_failed(), match="while preparing the sampling pass: RuntimeError: injected failure"):
        refine(webui, webui.txt2img(steps=6), script=script)


def test_a_sampler_that_cannot_be_hooked_gives_an_image_whose_infotext_says_the_refiner_did_not_run(
    webui, monkeypatch
):
    webui.write_pair()
    base_only = webui.run(webui.txt2img(steps=6, seed=3)).samples[0]
    monkeypatch.setattr(fresh("sdxl_refiner.host.sampling"), "wrap_sampler", injected("wrap_sampler"))
    p = webui.txt2img(steps=6, seed=3)
    result = refine(webui, p)
    assert (result.samples[0] == base_only).all()
    notes = p.extra_generation_params["SDXL Refiner notes"]
    assert "the refiner did not run: hooking the sampler failed (RuntimeError: injected failure in wrap_sampler)" in notes


def test_a_failure_after_the_image_was_refined_keeps_the_image_and_the_next_generation_is_clean(
    webui, monkeypatch, capsys
):
    webui.write_pair()
    refined = refine(webui, webui.txt2img(steps=6, seed=4)).samples[0]
    script = load_script()
    original_postprocess = script.postprocess

    def postprocess_failing(p, processed, *args):
        with monkeypatch.context() as patch:
            patch.setattr(fresh("sdxl_refiner.host.sampling"), "unwrap_sampler", injected("unwrap_sampler"))
            original_postprocess(p, processed, *args)

    script.postprocess = postprocess_failing
    again = refine(webui, webui.txt2img(steps=6, seed=4), script=script).samples[0]
    assert (again == refined).all()
    assert "cleaning up after the generation failed" in capsys.readouterr().out
    assert (refine(webui, webui.txt2img(steps=6, seed=4)).samples[0] == refined).all()


def test_an_unexpected_error_reading_the_settings_stops_the_generation(webui, monkeypatch):
    webui.write_pair()
    script = load_script()
    monkeypatch.setitem(script_globals(script), "from_ui_args", injected("from_ui_args"))
    with pytest.raises(refiner_failed(), match="while reading the settings: RuntimeError: injected failure"):
        refine(webui, webui.txt2img(steps=6), ui_args(), script=script)


def script_globals(script) -> dict:
    """The namespace of scripts/sdxl_refiner.py as loaded for this test."""
    return type(script).process.__globals__
