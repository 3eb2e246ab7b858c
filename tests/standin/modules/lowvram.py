"""Stand-in of ``modules.lowvram`` with the same logic as 1.10.1.

One tracked module lives on ``devices.device`` at a time (``module_in_gpu``); forward pre-hooks
move the module they sit on there and send the previous one back. ``--medvram`` hooks
``sd_model.model`` as a whole; ``--lowvram`` hooks the UNet's ``time_embed``, each input and
output block and the middle block, and places the rest of ``sd_model.model`` on the device.
"""

from __future__ import annotations

from collections import namedtuple

import torch
from modules import devices, shared

module_in_gpu = None
cpu = torch.device("cpu")

ModuleWithParent = namedtuple('ModuleWithParent', ['module', 'parent'], defaults=['None'])


def send_everything_to_cpu():
    global module_in_gpu

    if module_in_gpu is not None:
        module_in_gpu.to(cpu)

    module_in_gpu = None


def is_needed(sd_model):
    return shared.cmd_opts.lowvram or shared.cmd_opts.medvram or (shared.cmd_opts.medvram_sdxl and hasattr(sd_model, 'conditioner'))


def apply(sd_model):
    enable = is_needed(sd_model)
    shared.parallel_processing_allowed = not enable

    if enable:
        setup_for_low_vram(sd_model, not shared.cmd_opts.lowvram)
    else:
        sd_model.lowvram = False


def _detached(pairs):
    """Takes the named sub-modules off their owners so a ``.to()`` of the owner skips them."""
    stored = []
    for owner, field in pairs:
        stored.append(getattr(owner, field, None))
        setattr(owner, field, None)
    return stored


def _reattach(pairs, stored):
    for (owner, field), module in zip(pairs, stored, strict=False):
        setattr(owner, field, module)


def setup_for_low_vram(sd_model, use_medvram):
    if getattr(sd_model, 'lowvram', False):
        return

    sd_model.lowvram = True

    parents = {}

    def send_me_to_gpu(module, _):
        global module_in_gpu

        module = parents.get(module, module)

        if module_in_gpu == module:
            return

        if module_in_gpu is not None:
            module_in_gpu.to(cpu)

        module.to(devices.device)
        module_in_gpu = module

    first_stage_model = sd_model.first_stage_model
    first_stage_model_encode = sd_model.first_stage_model.encode
    first_stage_model_decode = sd_model.first_stage_model.decode

    def first_stage_model_encode_wrap(x):
        send_me_to_gpu(first_stage_model, None)
        return first_stage_model_encode(x)

    def first_stage_model_decode_wrap(z):
        send_me_to_gpu(first_stage_model, None)
        return first_stage_model_decode(z)

    kept_on_cpu = [(sd_model, 'first_stage_model'), (sd_model, 'depth_model'), (sd_model, 'embedder'), (sd_model, 'model')]
    is_sdxl = hasattr(sd_model, 'conditioner')
    if is_sdxl:
        kept_on_cpu.append((sd_model, 'conditioner'))
    else:
        kept_on_cpu.append((sd_model.cond_stage_model, 'transformer'))

    stored = _detached(kept_on_cpu)
    sd_model.to(devices.device)
    _reattach(kept_on_cpu, stored)

    if is_sdxl:
        sd_model.conditioner.register_forward_pre_hook(send_me_to_gpu)
    else:
        sd_model.cond_stage_model.transformer.register_forward_pre_hook(send_me_to_gpu)
        parents[sd_model.cond_stage_model.transformer] = sd_model.cond_stage_model

    sd_model.first_stage_model.register_forward_pre_hook(send_me_to_gpu)
    sd_model.first_stage_model.encode = first_stage_model_encode_wrap
    sd_model.first_stage_model.decode = first_stage_model_decode_wrap

    if use_medvram:
        sd_model.model.register_forward_pre_hook(send_me_to_gpu)
    else:
        diff_model = sd_model.model.diffusion_model
        block_fields = [(diff_model, 'input_blocks'), (diff_model, 'middle_block'), (diff_model, 'output_blocks'), (diff_model, 'time_embed')]
        stored = _detached(block_fields)
        sd_model.model.to(devices.device)
        _reattach(block_fields, stored)

        diff_model.time_embed.register_forward_pre_hook(send_me_to_gpu)
        for block in diff_model.input_blocks:
            block.register_forward_pre_hook(send_me_to_gpu)
        diff_model.middle_block.register_forward_pre_hook(send_me_to_gpu)
        for block in diff_model.output_blocks:
            block.register_forward_pre_hook(send_me_to_gpu)


def is_enabled(sd_model):
    return sd_model.lowvram
