"""The refiner's conds inside the WebUI's CFG denoiser, call by call.

The WebUI rebuilds cond and uncond for every model call (prompt editing changes them by step),
so they are converted on every refiner call in the ``on_cfg_denoiser`` callback: slices of the
base-width tensors plus the aesthetic-score embedding, cheap. What the WebUI rebuilt them from is
the pass's conds, or the refiner's own (its prompts, its text encoder), which the handoff passes
to the refiner's calls in their place. With ``pad_cond_uncond`` the WebUI pads
the shorter of the two AFTER this callback with the base's empty prompt, which is wider than the
refiner's context; padding here with the refiner-width empty prompt leaves it nothing to pad.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.settings import Settings
from sdxl_refiner.host.run_state import run_of


def base_empty_prompt(sd_model) -> torch.Tensor:
    """The context of the empty prompt, which the WebUI computes as the last step of loading a
    model: a request that comes right after the start can meet the model before that step (seen
    live), so it is computed here as the WebUI computes it."""
    empty = getattr(sd_model, "cond_stage_model_empty_prompt", None)
    if empty is not None:
        return empty
    from modules import devices, sd_models

    with devices.autocast(), torch.no_grad():
        return sd_models.get_empty_cond(sd_model)


def refiner_empty_prompt(empty: torch.Tensor, spec: RefinerCondSpec) -> torch.Tensor:
    """The base's empty-prompt context as the refiner sees it (its last ``context_dim`` channels)."""
    return empty if spec.kind == "base" else empty[..., -spec.context_dim :]


def _like(original: Mapping, values: dict):
    """Same container type the WebUI gave (its DictWithShape has the ``.shape`` it reads)."""
    return type(original)(values) if isinstance(original, dict) else values


def convert(cond: Mapping[str, torch.Tensor], spec: RefinerCondSpec, score: float):
    return _like(cond, refiner_conditioning(cond, spec, score))


def pad_to_same_length(cond: dict, uncond: dict, empty: torch.Tensor) -> None:
    """The WebUI's pad_cond_uncond, with the refiner's empty prompt: repeats of it close the gap."""
    gap = cond["crossattn"].shape[1] - uncond["crossattn"].shape[1]
    repeats = abs(gap) // empty.shape[1]
    if repeats == 0:
        return
    shorter = uncond if gap > 0 else cond
    padding = empty.to(shorter["crossattn"]).repeat((shorter["crossattn"].shape[0], repeats, 1))
    shorter["crossattn"] = torch.cat([shorter["crossattn"], padding], dim=1)


def on_cfg_denoiser(params) -> None:
    """Registered once with ``script_callbacks.on_cfg_denoiser``; acts only on refiner calls."""
    from modules import shared

    run = run_of(getattr(params.denoiser, "p", None))
    if run is None or run.active is None or not run.active.handoff.on_refiner:
        return
    settings: Settings = run.settings
    cond = convert(params.text_cond, run.spec, settings.aesthetic_score)
    uncond = convert(params.text_uncond, run.spec, settings.negative_aesthetic_score)
    opts = shared.opts
    if getattr(opts, "pad_cond_uncond", False) and not getattr(opts, "pad_cond_uncond_v0", False):
        pad_to_same_length(cond, uncond, run.active.empty_prompt)
    params.text_cond = cond
    params.text_uncond = uncond
