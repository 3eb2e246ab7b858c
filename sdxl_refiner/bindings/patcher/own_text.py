"""The refiner's own OpenCLIP encoder in Forge, when it is not the base's.

Forge's SDXL engine keeps the base's bigG as ``forge_objects.clip.cond_stage_model.clip_g``, an
``IntegratedCLIP`` in the Hugging Face layout. The refiner's encoder has that architecture, so its
tensors, converted from the file's OpenCLIP layout by Forge's own ``huggingface_guess``, are
pointed into that module for the length of one encoding, and Forge's prompt machinery runs as
usual (emphasis, BREAK, textual inversion, prompt editing, AND). The conds are cached per prompt by
``OwnTextEncoder``; Forge's own cond cache is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sdxl_refiner.core.checkpoint import REFINER_BIGG_PREFIX
from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.residency import tensors_swapped_in
from sdxl_refiner.host import text_encoder
from sdxl_refiner.host.text_encoder import EncoderSlot

MODULE_PREFIX = "clip_g."
# What Forge's loader itself leaves out when it fills an IntegratedCLIP from a checkpoint.
NOT_LOADED = ("transformer.text_model.embeddings.position_ids", "logit_scale")


def base_encoder(sd_model) -> torch.nn.Module | None:
    """The base's OpenCLIP bigG module, or None for an engine without one."""
    clip = getattr(getattr(sd_model, "forge_objects", None), "clip", None)
    return getattr(getattr(clip, "cond_stage_model", None), "clip_g", None)


def refiner_encoder_tensors(path: str) -> dict[str, torch.Tensor]:
    """The refiner's encoder under the base module's names, converted as Forge converts it when it
    loads the refiner as a model of its own."""
    from huggingface_guess.model_list import SDXLRefiner

    found = text_encoder.refiner_bigg_tensors(path, named_from=REFINER_BIGG_PREFIX)
    if not found:
        return {}
    converted = SDXLRefiner(SDXLRefiner.unet_config).process_clip_state_dict(found)
    return {
        key[len(MODULE_PREFIX):]: value
        for key, value in converted.items()
        if key.startswith(MODULE_PREFIX) and key[len(MODULE_PREFIX):] not in NOT_LOADED
    }


def fits(sd_model, tensors: dict[str, torch.Tensor]) -> bool:
    """Forge's prompt engine wraps ``token_embedding`` for textual inversion and keeps its weight
    under two names (``weight`` and ``wrapped.weight``); both name the file's one tensor."""
    return text_encoder.fits(base_encoder(sd_model), tensors, NOT_LOADED)


# Where a layer keeps the patches it applies at run time: Forge 2's online LoRAs, Neo's weight and
# bias functions (ComfyUI's: LoRAs it does not merge into the weights).
RUN_TIME_PATCHES = ("forge_online_loras", "weight_function", "bias_function")


def online_lora_modules(module: torch.nn.Module) -> list[str]:
    """Layers that add a LoRA at run time (Forge does so for quantised weights, Neo in low VRAM):
    those would add the base's LoRA to the refiner's weights too."""
    return [name for name, layer in module.named_modules()
            if any(getattr(layer, patches, None) for patches in RUN_TIME_PATCHES)]


@contextmanager
def refiner_encoder_in(sd_model, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """The refiner's weights in the base's encoder module, and the base's back on every exit.

    Forge places the text encoders (and merges their LoRAs into the base's weights) when it loads
    their patcher; that happens here first, with the base's weights, so that the load inside the
    encoding finds nothing to do and never writes into the refiner's tensors.
    """
    from backend import memory_management

    memory_management.load_model_gpu(sd_model.forge_objects.clip.patcher)
    module = base_encoder(sd_model)
    online = online_lora_modules(module)
    if online:
        raise SettingsError(
            "A LoRA applied at run time to the base's text encoder would also change the refiner's own "
            f"encoder ({len(online)} layers, e.g. {online[0]}): remove the LoRA, or choose a refiner "
            "whose text encoder is the base's."
        )
    with tensors_swapped_in(module, text_encoder.placed_for(module, tensors, NOT_LOADED)):
        yield


FORGE_SLOT = EncoderSlot(read=refiner_encoder_tensors, fits=fits, swapped_in=refiner_encoder_in)
