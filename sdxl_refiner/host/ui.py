"""The panel in the txt2img and img2img tabs, a sibling of the WebUI's own refiner accordion.

Its inputs are returned in ``settings.UI_ARG_ORDER``: that order is the positional API of the
script, so it must never change silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from sdxl_refiner.core.settings import (
    AESTHETIC_SCORE_RANGE,
    BASE_LORAS_LABELS,
    CFG_SCALE_RANGE,
    DEFAULT_AESTHETIC_SCORE,
    DEFAULT_NEGATIVE_AESTHETIC_SCORE,
    DEFAULT_NOISE_MULTIPLIER,
    DEFAULT_STEPS_PERCENT,
    HIRES_PASS_LABELS,
    NOISE_MULTIPLIER_RANGE,
    UI_ARG_ORDER,
)

ELEM_PREFIX = "sdxl_refiner"
TITLE = "SDXL Refiner"

TOOLTIPS = {
    "checkpoint": "The refiner checkpoint, e.g. sd_xl_refiner_1.0; an SDXL base or fine-tune works too. "
    "Only its UNet is loaded.",
    "steps_percent": "Share of the sampling steps the refiner runs; 10-30 % is usual, 0 turns it off. "
    "DPM fast and DPM adaptive have no step list: they switch at the sigma where that step would start.",
    "aesthetic_score": "Aesthetic score for the prompt, for refiner-type models (base-type ones ignore it)",
    "negative_aesthetic_score": "Aesthetic score for the negative prompt, for refiner-type models",
    "start_step": "Run this many steps on the base, then the refiner; overrides the %. 0: use the %",
    "hires_pass": "With hires fix: which pass gets the refiner. Default: Settings → SDXL Refiner",
    "prompt": "The refiner's own prompt, e.g. textures and detail (skin pores, film grain). Empty: the "
    "generation's prompt. Styles apply as to the main prompt. LoRA tags (<lora:name:0.8>) apply to the refiner "
    "alone; tags alone keep the generation's prompt",
    "negative_prompt": "The refiner's own negative prompt. Empty: the generation's negative prompt",
    "cfg_scale": "CFG scale of the refiner's steps; refiners often do best a little below the base's. "
    "0: the generation's CFG scale",
    "noise_multiplier": "Scales the fresh noise that ancestral and SDE samplers (Euler a, DPM++ 2M SDE, ...) "
    "add on the refiner's steps: below 1 keeps more of the base's image, above 1 adds more new detail. "
    "No effect with samplers that add no noise (Euler, DPM++ 2M, ...)",
    "base_loras": "Whether the main prompt's LoRAs also apply to the refiner. A LoRA in the refiner prompt "
    "applies to the refiner either way, at the refiner prompt's weight",
}


UNSUPPORTED_HOST = (
    "This WebUI has no process_before_every_sampling hook (added in 1.10.0), where SDXL Refiner joins "
    "the sampling loop: it cannot refine here. Update the WebUI to 1.10 or newer."
)


def refining_supported() -> bool:
    """Feature detection rather than version parsing: the one hook the binding cannot do without."""
    from modules import scripts

    return hasattr(scripts.Script, "process_before_every_sampling")


def elem_id(tabname: str, item: str) -> str:
    return f"{ELEM_PREFIX}_{tabname}_{item}"


@dataclass(frozen=True)
class Panel:
    """The components of one tab's panel; ``inputs`` are the script's args, in UI order."""

    enabled: gr.components.Component
    checkpoint: gr.components.Component
    steps_percent: gr.components.Component
    aesthetic_score: gr.components.Component
    negative_aesthetic_score: gr.components.Component
    start_step: gr.components.Component
    hires_pass: gr.components.Component
    prompt: gr.components.Component
    negative_prompt: gr.components.Component
    cfg_scale: gr.components.Component
    noise_multiplier: gr.components.Component
    base_loras: gr.components.Component
    split_line: gr.components.Component

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [getattr(self, name) for name in UI_ARG_ORDER]


def _score_default(key: str, fallback: float) -> float:
    from modules import shared

    value = getattr(shared.opts, key, fallback)
    low, high = AESTHETIC_SCORE_RANGE
    return min(max(float(value), low), high) if isinstance(value, (int, float)) else fallback


NO_CHECKPOINT_CHOICE = ("None", "")


def lists_no_checkpoint_choice(gradio_version: str) -> bool:
    """Gradio 4 (Forge 2, Forge Neo) shows a dropdown whose value is none of its choices as if
    the first choice were chosen, and a pick of that first choice then sends the old value: the
    field showed a refiner while the generation got none. An entry for no refiner keeps the field
    and the request the same there. Gradio 3 (the WebUI) shows such a value as an empty field, and
    takes no (name, value) choices, so its list is only the titles, as the WebUI's own refiner's."""
    return int(gradio_version.split(".")[0]) >= 4


def checkpoint_choices() -> dict[str, object]:
    from modules import sd_models

    titles = sd_models.checkpoint_tiles()
    return {"choices": [NO_CHECKPOINT_CHOICE, *titles] if lists_no_checkpoint_choice(gr.__version__) else titles}


def build_panel(is_img2img: bool) -> Panel:
    """Build the panel inside the current gradio Blocks (called from Script.ui)."""
    from modules import sd_models
    from modules.ui_common import create_refresh_button
    from modules.ui_components import InputAccordion

    tab = "img2img" if is_img2img else "txt2img"
    with InputAccordion(False, label=TITLE, elem_id=f"{ELEM_PREFIX}_{tab}") as enabled:
        with gr.Row(elem_classes=["sdxl-refiner-row"]):
            checkpoint = gr.Dropdown(
                label="Checkpoint", elem_id=elem_id(tab, "checkpoint"), value="", tooltip=TOOLTIPS["checkpoint"],
                **checkpoint_choices(),
            )
            create_refresh_button(
                checkpoint, sd_models.list_models, checkpoint_choices, elem_id(tab, "checkpoint_refresh")
            )
            steps_percent = gr.Slider(
                minimum=0, maximum=100, step=1, value=DEFAULT_STEPS_PERCENT, label="Refiner steps %",
                elem_id=elem_id(tab, "steps_percent"), tooltip=TOOLTIPS["steps_percent"],
            )
        if not refining_supported():
            gr.HTML(value=f"<p>{UNSUPPORTED_HOST}</p>", elem_id=elem_id(tab, "unsupported"),
                    elem_classes=["sdxl-refiner-unsupported"])
        split_line = gr.HTML(value="", elem_id=elem_id(tab, "split"), elem_classes=["sdxl-refiner-split"])
        with gr.Accordion("Advanced", open=False, elem_id=elem_id(tab, "advanced")):
            with gr.Row(elem_classes=["sdxl-refiner-row"]):
                low, high = AESTHETIC_SCORE_RANGE
                aesthetic_score = gr.Slider(
                    minimum=low, maximum=high, step=0.1, label="Aesthetic score",
                    value=_score_default("sdxl_refiner_high_aesthetic_score", DEFAULT_AESTHETIC_SCORE),
                    elem_id=elem_id(tab, "aesthetic_score"), tooltip=TOOLTIPS["aesthetic_score"],
                )
                negative_aesthetic_score = gr.Slider(
                    minimum=low, maximum=high, step=0.1, label="Negative aesthetic score",
                    value=_score_default("sdxl_refiner_low_aesthetic_score", DEFAULT_NEGATIVE_AESTHETIC_SCORE),
                    elem_id=elem_id(tab, "negative_aesthetic_score"), tooltip=TOOLTIPS["negative_aesthetic_score"],
                )
            with gr.Row(elem_classes=["sdxl-refiner-row"]):
                start_step = gr.Slider(
                    minimum=0, maximum=150, step=1, value=0, label="Start at step (0: use the %)",
                    elem_id=elem_id(tab, "start_step"), tooltip=TOOLTIPS["start_step"],
                )
                hires_pass = gr.Dropdown(
                    label="Hires fix pass", choices=list(HIRES_PASS_LABELS.values()),
                    value=HIRES_PASS_LABELS["default"], elem_id=elem_id(tab, "hires_pass"),
                    tooltip=TOOLTIPS["hires_pass"], visible=not is_img2img,
                )
            prompt = gr.Textbox(
                label="Refiner prompt", lines=2, value="", placeholder="Empty: the generation's prompt",
                elem_id=elem_id(tab, "prompt"), tooltip=TOOLTIPS["prompt"],
            )
            negative_prompt = gr.Textbox(
                label="Refiner negative prompt", lines=2, value="",
                placeholder="Empty: the generation's negative prompt",
                elem_id=elem_id(tab, "negative_prompt"), tooltip=TOOLTIPS["negative_prompt"],
            )
            with gr.Row(elem_classes=["sdxl-refiner-row"]):
                cfg_scale = gr.Slider(
                    minimum=CFG_SCALE_RANGE[0], maximum=CFG_SCALE_RANGE[1], step=0.5, value=0.0,
                    label="Refiner CFG scale (0: the generation's)",
                    elem_id=elem_id(tab, "cfg_scale"), tooltip=TOOLTIPS["cfg_scale"],
                )
                noise_multiplier = gr.Slider(
                    minimum=NOISE_MULTIPLIER_RANGE[0], maximum=NOISE_MULTIPLIER_RANGE[1], step=0.05,
                    value=DEFAULT_NOISE_MULTIPLIER, label="Refiner noise",
                    elem_id=elem_id(tab, "noise_multiplier"), tooltip=TOOLTIPS["noise_multiplier"],
                )
            base_loras = gr.Radio(
                label="Main prompt's LoRAs", choices=list(BASE_LORAS_LABELS.values()),
                value=BASE_LORAS_LABELS["none"], elem_id=elem_id(tab, "base_loras"), tooltip=TOOLTIPS["base_loras"],
            )
    return Panel(
        enabled=enabled,
        checkpoint=checkpoint,
        steps_percent=steps_percent,
        aesthetic_score=aesthetic_score,
        negative_aesthetic_score=negative_aesthetic_score,
        start_step=start_step,
        hires_pass=hires_pass,
        prompt=prompt,
        negative_prompt=negative_prompt,
        cfg_scale=cfg_scale,
        noise_multiplier=noise_multiplier,
        base_loras=base_loras,
        split_line=split_line,
    )
