"""The refiner's own OpenCLIP encoder in the WebUI: pointed into the base conditioner's embedder.

The WebUI's SDXL conditioner keeps the bigG encoder as an sgm embedder (hijacked: wrapped by the
WebUI's own class) whose ``model`` holds the OpenCLIP weights in the file's layout.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from sdxl_refiner.core.residency import tensors_swapped_in
from sdxl_refiner.host.text_encoder import EncoderSlot, fits, placed_for, refiner_bigg_tensors


def second_text_encoder(sd_model) -> torch.nn.Module | None:
    """The base conditioner's OpenCLIP embedder (unwrapped from the WebUI's hijack wrapper)."""
    for embedder in getattr(sd_model.conditioner, "embedders", []):
        inner = getattr(embedder, "wrapped", embedder)
        model = getattr(inner, "model", None)
        if model is not None and hasattr(model, "ln_final"):
            return inner
    return None


def refiner_encoder_tensors(path: str) -> dict[str, torch.Tensor]:
    """By the embedder's names: its OpenCLIP weights sit under ``model.``, as in the file."""
    return refiner_bigg_tensors(path, named_from="model.")


@contextmanager
def refiner_encoder_in(sd_model, tensors: dict[str, torch.Tensor]):
    """The refiner's weights in the base's encoder module, and the base's back on every exit.

    Under --medvram/--lowvram the WebUI's hooks move the conditioner while it encodes; the GPU is
    emptied through them before and after, so their bookkeeping never points at swapped tensors.
    """
    from modules import lowvram

    low_vram = bool(getattr(sd_model, "lowvram", False))
    module = second_text_encoder(sd_model)
    placed = placed_for(module, tensors)
    if low_vram:
        lowvram.send_everything_to_cpu()
    with tensors_swapped_in(module, placed):
        try:
            yield
        finally:
            if low_vram:
                lowvram.send_everything_to_cpu()


WEBUI_SLOT = EncoderSlot(
    read=refiner_encoder_tensors,
    fits=lambda sd_model, tensors: fits(second_text_encoder(sd_model), tensors),
    swapped_in=refiner_encoder_in,
)
