"""The refiner's prompts, encoded by the host's own prompt machinery once per pass.

A refiner prompt is encoded exactly as the WebUI encodes a pass's prompt (same function, size,
step counts and scheduling option), so emphasis, BREAK, AND, textual inversion and prompt editing
work, and a refiner prompt equal to the main one gives the same conds. It is styled as the WebUI
styles its hires prompt, and its comments are stripped as the WebUI strips the main prompt's. The
conds reach the refiner's calls as the sampler's ``cond``/``uncond`` arguments, so an AND
structure of its own is combined with its own weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sdxl_refiner.core.loras import LoraTag, split_loras
from sdxl_refiner.core.settings import Settings, check_prompt_tags


@dataclass(frozen=True)
class PromptJob:
    """What one sampling pass encodes: one prompt and one negative per image, at the pass's size;
    ``steps``/``hires_steps`` are the step counts the WebUI schedules prompt editing over."""

    prompts: tuple[str, ...]
    negatives: tuple[str, ...]
    width: int
    height: int
    steps: int
    hires_steps: int | None
    # the LoRAs whose text-encoder weights the encoder runs with; None: the pass's own
    loras: tuple[LoraTag, ...] | None = None


def pass_job(p) -> PromptJob:
    """The prompts the WebUI encoded for this pass (the hires pass has its own prompts and size)."""
    from modules import sd_samplers

    hires = bool(p.is_hr_pass)
    prompts = (getattr(p, "hr_prompts", None) if hires else None) or p.prompts
    negatives = (getattr(p, "hr_negative_prompts", None) if hires else None) or p.negative_prompts
    hires_steps = None
    if hires:
        config = sd_samplers.find_sampler_config(getattr(p, "hr_sampler_name", None) or p.sampler_name)
        pass_steps = p.hr_second_pass_steps or p.steps
        hires_steps = config.total_steps(pass_steps) if config else pass_steps
    return PromptJob(
        prompts=tuple(prompts),
        negatives=tuple(negatives),
        width=p.hr_upscale_to_x if hires else p.width,
        height=p.hr_upscale_to_y if hires else p.height,
        steps=getattr(p, "firstpass_steps", None) or p.steps,
        hires_steps=hires_steps,
    )


def _as_the_webui_prepares(p, field: str, text: str) -> str:
    """Styles applied, then comments stripped, in the order the WebUI treats its own prompts."""
    from modules import shared

    styles = getattr(shared, "prompt_styles", None)
    if styles is not None and getattr(p, "styles", None):
        apply = styles.apply_negative_styles_to_prompt if field == "negative_prompt" else styles.apply_styles_to_prompt
        text = apply(text, p.styles)
    if getattr(shared.opts, "enable_prompt_comments", False):
        try:
            from modules.processing_scripts.comments import strip_comments
        except ImportError:  # a WebUI before prompt comments (1.8)
            pass
        else:
            text = strip_comments(text)
    # a style may bring an extra network tag the text itself did not have
    check_prompt_tags(field, text)
    return text


def styled_prompt(p, settings: Settings) -> str:
    """The refiner prompt as styled, its LoRA tags still in it."""
    return _as_the_webui_prepares(p, "prompt", settings.prompt) if settings.prompt else ""


def refiner_job(p, settings: Settings, loras: tuple[LoraTag, ...] | None = None) -> PromptJob:
    """This pass's job with the refiner's own texts, one copy per image, where the user gave them.

    The refiner prompt's LoRA tags are taken out as the host takes them out of the main prompt; a
    refiner prompt of tags alone keeps the generation's prompt. ``loras``: see ``PromptJob``."""
    job = pass_job(p)
    changes: dict[str, object] = {"loras": loras}
    text = split_loras("prompt", styled_prompt(p, settings))[0]
    if text.strip():
        changes["prompts"] = (text,) * len(job.prompts)
    if settings.negative_prompt:
        changes["negatives"] = (_as_the_webui_prepares(p, "negative_prompt", settings.negative_prompt),) * len(job.negatives)
    return dataclasses.replace(job, **changes)


# (cond, uncond) for a job, as the host's ``StableDiffusionProcessing.setup_conds`` makes them.
Encode = Callable[[Any, PromptJob], tuple]


def encode(sd_model, job: PromptJob, *, scheduling_option: bool = True) -> tuple:
    """``Encode`` as ``StableDiffusionProcessing.setup_conds`` calls the host's prompt parser:
    WebUI 1.10 and Forge 2 also pass their "old prompt editing timelines" option, which a host
    without that option (``scheduling_option=False``) does not take."""
    from modules import devices, prompt_parser, shared

    scheduling = (bool(getattr(shared.opts, "use_old_scheduling", False)),) if scheduling_option else ()
    size = {"width": job.width, "height": job.height}
    with torch.no_grad(), devices.autocast():
        cond = prompt_parser.get_multicond_learned_conditioning(
            sd_model, prompt_parser.SdConditioning(list(job.prompts), **size), job.steps, job.hires_steps,
            *scheduling,
        )
        uncond = prompt_parser.get_learned_conditioning(
            sd_model, prompt_parser.SdConditioning(list(job.negatives), is_negative_prompt=True, **size),
            job.steps, job.hires_steps, *scheduling,
        )
    return cond, uncond


def refiner_conds(p, run, encode: Encode) -> tuple | None:
    """The (cond, uncond) the refiner's calls get; None when the pass's own serve, sliced per call.

    Once per distinct job in a generation: batch count repeats the job, and the hires pass has its own.
    ``encode`` is the host's.
    """
    from modules import shared

    settings: Settings = run.settings
    lora_text = run.loras is not None and run.loras.text_encoder_differs() and run.own_text is None
    if run.own_text is None and not settings.prompt and not settings.negative_prompt and not lora_text:
        return None
    job = refiner_job(p, settings, run.loras.chosen if lora_text else None)
    if run.own_text is None and job == pass_job(p):
        # the pass's own texts (a refiner prompt of LoRA tags alone, or the main prompt written again)
        # and the pass's LoRAs on the encoder: the pass's own conds are these
        return None
    if run.own_text is not None:
        return run.own_text.encode(job, encode)
    if job not in run.encoded:
        run.encoded[job] = encode(shared.sd_model, job)
    return run.encoded[job]
