"""--medvram, --medvram-sdxl and --lowvram: the WebUI's low-VRAM hooks see the refiner like their own UNet."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.standin.refiner_runs import CallTrace, cached_refiner, refine, ui_args


def blocks(unet):
    return [unet.time_embed, *unet.input_blocks, unet.middle_block, *unet.output_blocks]


def load_with_flag(webui, flag: str):
    setattr(webui.shared.cmd_opts, flag, True)
    webui.write_pair()  # loads the base with the flag applied
    return webui.shared.sd_model


@pytest.mark.parametrize("flag", ["medvram", "medvram_sdxl", "lowvram"])
def test_refined_run_under_low_vram_flags_switches_and_leaves_the_hooks_as_they_were(webui, flag):
    model = load_with_flag(webui, flag)
    assert model.lowvram
    base = model.model.diffusion_model
    base_hooks = [dict(block._forward_pre_hooks) for block in blocks(base)]
    model_hooks = dict(model.model._forward_pre_hooks)
    refiner = cached_refiner(webui)
    trace = CallTrace()
    trace.attach(refiner, "refiner")
    refine(webui, webui.txt2img(steps=4), ui_args(steps_percent=50))
    assert len(trace.calls) == 2
    assert model.model.diffusion_model is base
    assert [dict(block._forward_pre_hooks) for block in blocks(base)] == base_hooks
    assert dict(model.model._forward_pre_hooks) == model_hooks
    assert all(not block._forward_pre_hooks for block in blocks(refiner))
    tracked = webui.lowvram.module_in_gpu
    assert tracked is None or not any(tracked is module for module in refiner.modules())


def test_lowvram_moves_refiner_blocks_through_the_webuis_own_hook(webui):
    model = load_with_flag(webui, "lowvram")
    refiner = cached_refiner(webui)
    seen: list[torch.nn.Module] = []

    def record(params):
        if params.denoiser.p.sdxl_refiner_run.active and params.denoiser.p.sdxl_refiner_run.active.handoff.on_refiner:
            seen.append(webui.lowvram.module_in_gpu)

    webui.script_callbacks.on_cfg_denoiser(record)
    refine(webui, webui.txt2img(steps=4), ui_args(steps_percent=50))
    refiner_blocks = blocks(refiner)
    # by the refiner's second call, the WebUI's hook has been moving refiner blocks in
    assert any(any(module is block for block in refiner_blocks) for module in seen[1:])
    assert model.model.diffusion_model is not refiner


def test_medvram_sends_the_base_out_before_the_refiner_comes_in(webui):
    model = load_with_flag(webui, "medvram")
    sent: list[object] = []
    original = webui.lowvram.send_everything_to_cpu

    def recording():
        sent.append(webui.lowvram.module_in_gpu)
        original()

    webui.lowvram.send_everything_to_cpu = recording
    refine(webui, webui.txt2img(steps=4), ui_args(steps_percent=50))
    assert sent and sent[0] is model.model
    assert len(sent) >= 2


@pytest.mark.parametrize("flag", ["medvram", "lowvram"])
def test_base_weights_refiner_under_low_vram_gives_the_base_only_image(webui, flag):
    load_with_flag(webui, flag)
    webui.write_checkpoint("copy.safetensors", engine=webui.shared.sd_model)
    trace = CallTrace()
    trace.attach(cached_refiner(webui, "copy.safetensors"), "refiner")
    base_only = webui.run(webui.txt2img(seed=41)).samples[0]
    p = webui.txt2img(seed=41)
    refined = refine(webui, p, ui_args(checkpoint="copy.safetensors", steps_percent=50)).samples[0]
    assert trace.names() == ["refiner"] * 5, "the refiner ran its 5 steps under the low-VRAM hooks"
    assert p.extra_generation_params["SDXL Refiner split"] == "base 5 / refiner 5"
    assert torch.equal(base_only, refined)


@pytest.mark.parametrize("flag", ["medvram", "lowvram"])
def test_under_low_vram_flags_the_cached_refiner_ends_on_its_own_tensors(webui, flag, monkeypatch):
    """On a GPU every move gives each tensor new memory; a refiner moved back by ``.to`` would lose the
    cache's pinned RAM. Here each ``Module.to`` copies, as a device move does."""
    load_with_flag(webui, flag)
    refiner = cached_refiner(webui)
    storages = {name: t.data_ptr() for name, t in refiner.state_dict().items()}
    plain_to = torch.nn.Module.to

    def moving_to(module, *args, **kwargs):
        return plain_to(module, *args, **kwargs)._apply(torch.clone)

    monkeypatch.setattr(torch.nn.Module, "to", moving_to)
    trace = CallTrace()
    trace.attach(refiner, "refiner")
    refine(webui, webui.txt2img(steps=4), ui_args(steps_percent=50))
    assert len(trace.calls) == 2
    assert {name: t.data_ptr() for name, t in refiner.state_dict().items()} == storages


class CpuStreamOps:
    """CudaStreamOps' calls, done at once on the CPU: the offload path runs without a GPU."""

    def __init__(self):
        self.copies = 0

    def new_stream(self, device):
        self.copies += 1

    def on_stream(self, stream):
        return contextlib.nullcontext()

    def record_event(self, stream):
        return None

    def wait_for(self, event, tensors):
        pass


def test_offloaded_refiner_is_swapped_in_by_a_device_copy_and_the_cached_copy_never_moves(webui, monkeypatch):
    from sdxl_refiner.core import residency
    from sdxl_refiner.core.residency import StoragePlan

    webui.write_pair()
    from sdxl_refiner.bindings.webui import unet

    ops = CpuStreamOps()
    monkeypatch.setattr(residency, "CudaStreamOps", lambda: ops)
    resident = refine(webui, webui.txt2img(seed=61), ui_args(steps_percent=50)).samples[0]
    monkeypatch.setattr(unet, "storage_plan", lambda refiner_bytes: StoragePlan("cpu", "cpu", pin_memory=False, prefetch=True))
    refiner = cached_refiner(webui)
    tensors_before = dict(refiner.state_dict(keep_vars=True))
    trace = CallTrace()
    trace.attach(refiner, "refiner")
    offloaded = refine(webui, webui.txt2img(seed=61), ui_args(steps_percent=50)).samples[0]
    assert ops.copies == 1
    assert trace.calls
    assert torch.equal(resident, offloaded)
    after = refiner.state_dict(keep_vars=True)
    assert all(after[name] is tensor for name, tensor in tensors_before.items())


def test_an_active_sd_unet_serves_the_base_steps_only_and_is_back_after_the_pass(webui):
    webui.write_pair()
    sd_unet = webui.module("modules.sd_unet")
    base = webui.shared.sd_model.model.diffusion_model
    served: list[int] = []

    class RecordingSdUnet(sd_unet.SdUnet):
        def forward(self, x, timesteps, context, *args, **kwargs):
            served.append(int(timesteps[0]))
            return sd_unet.original_forward(base, x, timesteps, context, *args, **kwargs)

    replacement = RecordingSdUnet()
    sd_unet.current_unet = replacement
    trace = CallTrace()
    trace.attach(cached_refiner(webui), "refiner")
    refine(webui, webui.txt2img(steps=6), ui_args(steps_percent=50))
    assert len(served) == 3
    assert len(trace.calls) == 3
    assert sd_unet.current_unet is replacement
