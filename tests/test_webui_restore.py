"""However a pass ends, the base is back exactly as it was and the next generation is a clean one."""

from __future__ import annotations

import pytest
import torch

from tests.standin.refiner_runs import CallTrace, assert_restored, cached_refiner, refine, snapshot, ui_args


def stop_after_refiner_calls(webui, count: int, flag: str):
    """A cfg_denoiser callback that sets state.<flag> once the refiner has served ``count`` calls."""
    refiner_calls = CallTrace()
    refiner_calls.attach(cached_refiner(webui), "refiner")

    def maybe_stop(params):
        if len(refiner_calls.calls) >= count:
            setattr(webui.shared.state, flag, True)

    webui.script_callbacks.on_cfg_denoiser(maybe_stop)
    return refiner_calls


@pytest.mark.parametrize("flag", ["interrupted", "skipped"])
def test_interrupt_or_skip_after_the_switch_puts_the_base_back(webui, flag):
    webui.write_pair()
    clean = webui.run(webui.txt2img(seed=21)).samples[0]
    before = snapshot(webui)
    calls = stop_after_refiner_calls(webui, 1, flag)
    refine(webui, webui.txt2img(steps=10, seed=21), ui_args(steps_percent=50))
    assert len(calls.calls) == 2  # the flag is set in the second call; the WebUI stops at the third
    assert_restored(webui, before)
    webui.script_callbacks.clear_callbacks()
    assert torch.equal(webui.run(webui.txt2img(seed=21)).samples[0], clean)


@pytest.mark.parametrize("flag", ["interrupted", "skipped"])
def test_a_pass_stopped_before_the_switch_reports_no_missed_switch(webui, flag):
    webui.write_pair()

    def stop_at_once(params):
        setattr(webui.shared.state, flag, True)

    webui.script_callbacks.on_cfg_denoiser(stop_at_once)
    p = webui.txt2img(steps=10)
    refine(webui, p, ui_args(steps_percent=50))
    assert "SDXL Refiner split" in p.extra_generation_params, "the pass was planned with the refiner"
    assert "refiner did not run" not in p.extra_generation_params.get("SDXL Refiner notes", "")


def test_an_error_in_a_refiner_step_propagates_and_puts_the_base_back(webui):
    webui.write_pair()
    before = snapshot(webui)

    def out_of_memory(module, args, kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    handle = cached_refiner(webui).register_forward_pre_hook(out_of_memory, with_kwargs=True)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        refine(webui, webui.txt2img(steps=6))
    handle.remove()
    assert_restored(webui, before)


def test_a_failed_refiner_load_is_reported_at_the_switch_and_the_next_generations_are_clean(webui):
    webui.write_pair()
    clean_plain = webui.run(webui.txt2img(steps=6, seed=5)).samples[0]
    clean_refined = refine(webui, webui.txt2img(steps=6, seed=5)).samples[0]
    before = snapshot(webui)
    path = webui.checkpoint("refiner.safetensors").filename
    p = webui.txt2img(steps=6, seed=5)
    from tests.standin.refiner_runs import load_script

    script = load_script()
    webui.attach(p, script, ui_args())
    original_process = script.process

    def process_then_break_file(p, *args):
        original_process(p, *args)
        refiner = p.sdxl_refiner_run.refiner
        refiner.pending.result()  # the load has finished; now damage what a reload would read
        from sdxl_refiner.host.resources import resources
        resources().cache.unload()
        refiner.pending = resources().cache.start_loading(str(path) + ".missing", lambda _path: None)

    script.process = process_then_break_file
    from sdxl_refiner.core.errors import CheckpointError

    trace = CallTrace()
    handle = trace.attach(before["unet"], "base")
    with pytest.raises(CheckpointError, match=r"\.missing"):
        webui.run(p)
    handle.remove()
    assert trace.names() == ["base"] * 5, "the base ran its 5 steps and the error came at the switch to step 6"
    assert_restored(webui, before)
    assert torch.equal(refine(webui, webui.txt2img(steps=6, seed=5)).samples[0], clean_refined)
    assert torch.equal(webui.run(webui.txt2img(steps=6, seed=5)).samples[0], clean_plain)


def test_a_refined_generation_leaves_the_next_plain_one_identical_to_a_clean_run(webui):
    webui.write_pair()
    clean_txt = webui.run(webui.txt2img(seed=31)).samples[0]
    clean_img = webui.run(webui.img2img(seed=31)).samples[0]
    refine(webui, webui.txt2img(seed=31))
    refine(webui, webui.img2img(seed=31))
    assert torch.equal(webui.run(webui.txt2img(seed=31)).samples[0], clean_txt)
    assert torch.equal(webui.run(webui.img2img(seed=31)).samples[0], clean_img)


def test_loading_the_refiner_does_not_draw_from_the_global_rng(webui):
    webui.write_pair()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    cached_refiner(webui, dtype=torch.float32)
    assert torch.equal(torch.rand(3), expected)
