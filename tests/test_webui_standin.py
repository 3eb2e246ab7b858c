"""The stand-in WebUI behaves as 1.10.1 where the binding relies on it."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sdxl_refiner.core.checkpoint import CheckpointKind, classify_checkpoint

HOOKS_IN_ORDER = [
    "setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
    "process_batch", "process_before_every_sampling", "post_sample", "postprocess_batch",
    "postprocess_image", "postprocess",
]


def recording_script(webui, calls: list[str]):
    class Recorder(webui.scripts.Script):
        def title(self):
            return "Recorder"

        def show(self, is_img2img):
            return webui.scripts.AlwaysVisible

    def record(name):
        return lambda self, p, *args, **kwargs: calls.append(name)

    for name in HOOKS_IN_ORDER:
        setattr(Recorder, name, record(name))
    return Recorder()


def test_hooks_fire_in_the_order_seen_in_a_running_webui(webui):
    webui.write_checkpoint("base.safetensors")
    webui.load("base.safetensors")
    calls: list[str] = []
    p = webui.txt2img(steps=2)
    webui.attach(p, recording_script(webui, calls), [True])
    webui.run(p)
    assert calls == HOOKS_IN_ORDER


def test_hires_fix_calls_process_before_every_sampling_once_per_pass(webui):
    webui.write_checkpoint("base.safetensors")
    webui.load("base.safetensors")
    calls: list[str] = []
    p = webui.txt2img(steps=2, enable_hr=True, hr_second_pass_steps=2)
    webui.attach(p, recording_script(webui, calls), [True])
    webui.run(p)
    assert calls.count("process_before_every_sampling") == 2


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "Heun", "DPM fast", "DDIM", "LCM"])
def test_every_kind_of_sampler_runs_and_is_deterministic(webui, sampler):
    webui.write_checkpoint("base.safetensors")
    webui.load("base.safetensors")
    first = webui.run(webui.txt2img(sampler_name=sampler, steps=4)).samples[0]
    second = webui.run(webui.txt2img(sampler_name=sampler, steps=4)).samples[0]
    assert torch.equal(first, second)
    assert torch.isfinite(first).all()


def test_written_checkpoints_classify_as_sdxl_base_and_refiner(webui):
    base = webui.write_checkpoint("base.safetensors", "base")
    refiner = webui.write_checkpoint("refiner.safetensors", "refiner")
    assert classify_checkpoint(base).kind is CheckpointKind.SDXL_BASE
    assert classify_checkpoint(refiner).kind is CheckpointKind.SDXL_REFINER


def test_lowvram_keeps_one_unet_block_on_the_device_and_hooks_every_block(webui):
    webui.shared.cmd_opts.lowvram = True
    webui.write_checkpoint("base.safetensors")
    model = webui.load("base.safetensors")
    unet = model.model.diffusion_model
    blocks = [unet.time_embed, *unet.input_blocks, unet.middle_block, *unet.output_blocks]
    assert all(len(block._forward_pre_hooks) == 1 for block in blocks)
    webui.run(webui.txt2img(steps=1))
    assert webui.lowvram.module_in_gpu in (*blocks, model.first_stage_model)


def test_checkpoint_lookup_accepts_title_name_and_hash_and_refuses_unknown_names(webui):
    webui.write_checkpoint("sub/refiner.safetensors", "refiner")
    info = webui.sd_models.get_closet_checkpoint_match("refiner")
    assert info is not None
    assert webui.sd_models.get_closet_checkpoint_match(info.title) is info
    info.calculate_shorthash()
    assert webui.sd_models.get_closet_checkpoint_match(info.shorthash) is info
    assert webui.sd_models.get_closet_checkpoint_match(info.title) is info
    assert webui.sd_models.get_closet_checkpoint_match("nothing-like-it") is None


def test_a_checkpoint_not_hashed_yet_gets_its_hash_title_and_aliases_from_calculate_shorthash(webui):
    path = webui.write_checkpoint("sub/refiner.safetensors", "refiner")
    info = webui.checkpoint("refiner")
    assert (info.shorthash, info.title, info.short_title) == (None, "sub/refiner.safetensors", "refiner")
    shorthash = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert info.calculate_shorthash() == shorthash
    assert (info.title, info.short_title) == (f"sub/refiner.safetensors [{shorthash}]", f"refiner [{shorthash}]")
    assert list(webui.sd_models.checkpoints_list) == [info.title]
    assert webui.sd_models.checkpoint_aliases[f"refiner [{shorthash}]"] is info
    webui.sd_models.list_models()
    assert webui.checkpoint("refiner").title == info.title, "the sha256 is cached for the next list refresh"
    assert webui.module("modules.hashes").calculated == [str(path)]


def test_with_no_hashing_a_checkpoint_keeps_its_plain_title(webui):
    webui.write_checkpoint("refiner.safetensors", "refiner")
    webui.shared.cmd_opts.no_hashing = True
    info = webui.checkpoint("refiner")
    assert info.calculate_shorthash() is None
    assert (info.shorthash, info.title) == (None, "refiner.safetensors")
