"""Prompts encoded with the refiner's own text encoder, when it is not the base's.

The refiner's encoder has the architecture of the base's second one (OpenCLIP ViT-bigG), so its
weights are pointed into that module for the length of one encoding and the WebUI's own prompt
machinery runs as usual: emphasis, BREAK, textual inversion, prompt editing, AND. The base's
first encoder runs too; its channels and the target-size embedding are cut away afterwards like
any base cond. Results are cached per prompt; the WebUI's own cond cache is never touched, so a
later base-only generation cannot receive refiner-encoded conds.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import safe_open

from sdxl_refiner.residency import file_identity, tensors_swapped_in
from sdxl_refiner.webui import prompts
from sdxl_refiner.webui.prompts import PromptJob

REFINER_ENCODER_PREFIX = "conditioner.embedders.0."
CACHED_PROMPTS = 16


def second_text_encoder(sd_model) -> torch.nn.Module | None:
    """The base conditioner's OpenCLIP embedder (unwrapped from the WebUI's hijack wrapper)."""
    for embedder in getattr(sd_model.conditioner, "embedders", []):
        inner = getattr(embedder, "wrapped", embedder)
        model = getattr(inner, "model", None)
        if model is not None and hasattr(model, "ln_final"):
            return inner
    return None


def refiner_encoder_tensors(path: str) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as file:
        return {
            key[len(REFINER_ENCODER_PREFIX):]: file.get_tensor(key)
            for key in file.keys()  # noqa: SIM118 - safe_open is not iterable
            if key.startswith(REFINER_ENCODER_PREFIX + "model.")
        }


def file_key(module_key: str) -> str:
    """The WebUI wraps layers it hijacks (``token_embedding`` becomes ``EmbeddingsWithFixes`` with a
    ``wrapped`` child): the checkpoint names the layer without that step."""
    return re.sub(r"(^|\.)wrapped\.", r"\1", module_key)


def filled_tensors(module: torch.nn.Module, not_loaded: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The module's tensors by their own names, without those no checkpoint fills (``not_loaded``,
    by the file's names)."""
    return {
        name: value for name, value in module.state_dict(keep_vars=True).items() if file_key(name) not in not_loaded
    }


def fits(module: torch.nn.Module | None, tensors: dict[str, torch.Tensor], not_loaded: tuple[str, ...] = ()) -> bool:
    if module is None or not tensors:
        return False
    own = {file_key(key): value for key, value in filled_tensors(module, not_loaded).items()}
    return own.keys() == tensors.keys() and all(own[k].shape == tensors[k].shape for k in own)


def placed_for(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
               not_loaded: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The refiner's tensors on each of the module's tensors' device and dtype, by the module's
    names; a tensor the module holds under two names (a wrapper's alias) is converted once."""
    converted: dict[str, torch.Tensor] = {}
    placed: dict[str, torch.Tensor] = {}
    for name, value in filled_tensors(module, not_loaded).items():
        key = file_key(name)
        if key not in converted:
            converted[key] = tensors[key].to(device=value.device, dtype=value.dtype)
        placed[name] = converted[key]
    return placed


@contextmanager
def refiner_encoder_in(sd_model, module: torch.nn.Module, tensors: dict[str, torch.Tensor]):
    """The refiner's weights in the base's encoder module, and the base's back on every exit.

    Under --medvram/--lowvram the WebUI's hooks move the conditioner while it encodes; the GPU is
    emptied through them before and after, so their bookkeeping never points at swapped tensors.
    """
    from modules import lowvram

    low_vram = bool(getattr(sd_model, "lowvram", False))
    placed = placed_for(module, tensors)
    if low_vram:
        lowvram.send_everything_to_cpu()
    with tensors_swapped_in(module, placed):
        try:
            yield
        finally:
            if low_vram:
                lowvram.send_everything_to_cpu()


def _in_the_webui(sd_model, tensors: dict[str, torch.Tensor]) -> AbstractContextManager:
    return refiner_encoder_in(sd_model, second_text_encoder(sd_model), tensors)


@dataclass(frozen=True)
class EncoderSlot:
    """Where a host keeps the base's OpenCLIP encoder: how the refiner's weights are read for it,
    checked against it and pointed into it. The prompt machinery around it is the host's own."""

    read: Callable[[str], dict[str, torch.Tensor]]
    fits: Callable[[Any, dict[str, torch.Tensor]], bool]
    swapped_in: Callable[[Any, dict[str, torch.Tensor]], AbstractContextManager]


WEBUI_SLOT = EncoderSlot(
    read=refiner_encoder_tensors,
    fits=lambda sd_model, tensors: fits(second_text_encoder(sd_model), tensors),
    swapped_in=_in_the_webui,
)


class OwnTextEncoder:
    """The refiner's encoder weights (read once per file) and the conds encoded with them."""

    def __init__(self, path: str, tensors: dict[str, torch.Tensor], slot: EncoderSlot = WEBUI_SLOT):
        self.identity = file_identity(path)
        self.tensors = tensors
        self.slot = slot
        self.conds: OrderedDict[tuple, tuple] = OrderedDict()

    def encode(self, job: PromptJob) -> tuple:
        """(cond, uncond) for one pass's prompts, as the WebUI builds them, with the refiner's encoder in place."""
        from modules import shared

        key = (job, shared.sd_model.sd_checkpoint_info)
        if key in self.conds:
            self.conds.move_to_end(key)
            return self.conds[key]
        with self.slot.swapped_in(shared.sd_model, self.tensors):
            self.conds[key] = prompts.encode(shared.sd_model, job)
        while len(self.conds) > CACHED_PROMPTS:
            self.conds.popitem(last=False)
        return self.conds[key]
