"""The refiner's calls inside Forge's sampling function, through the ``UnetPatcher``'s own hooks.

Forge runs every model call of a pass through ``sampling_function``, which hands the patcher's
``KModel`` and the compiled conds to each conditioning modifier before it batches them for the
UNet. The modifier installed here leaves base calls untouched; once the handoff has switched, it
gives back the refiner's ``KModel`` and the conds converted to the refiner's widths (text context
of the second encoder, aesthetic score in the vector), so the same loop goes on with the refiner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.handoff import Handoff

Modifier = Callable[..., tuple]


@dataclass
class RefinerRoute:
    """The model the next call runs on: the handoff's slot. ``handoff`` is set for the pass that
    runs (the sampler's call), and cleared when it ends; without it every call stays on the base."""

    model: Any
    # (cond, uncond): the aesthetic scores of the run's settings
    scores: tuple[float, float]
    spec: RefinerCondSpec | None = None
    handoff: Handoff | None = None

    @property
    def on_refiner(self) -> bool:
        return self.handoff is not None and self.handoff.on_refiner


def convert_item(item: dict, spec: RefinerCondSpec, score: float) -> dict:
    """One compiled cond of Forge's sampling function, at the refiner's widths.

    Its ``model_conds`` hold Forge's ``Condition`` wrappers, rebuilt with their own class so Forge
    batches them as before; other keys (strength, area, control) pass through.
    """
    converted = refiner_conditioning({"crossattn": item["cross_attn"], "vector": item["pooled_output"]}, spec, score)
    model_conds = dict(item["model_conds"])
    model_conds["c_crossattn"] = type(model_conds["c_crossattn"])(converted["crossattn"])
    model_conds["y"] = type(model_conds["y"])(converted["vector"])
    return {**item, "cross_attn": converted["crossattn"], "pooled_output": converted["vector"], "model_conds": model_conds}


def _converted(route: RefinerRoute, conds: list[dict] | None, score: float) -> list[dict] | None:
    if conds is None or route.spec is None:
        return conds
    return [convert_item(item, route.spec, score) for item in conds]


def conditioning_modifier(route: RefinerRoute) -> Modifier:
    """A plain function (not a bound method): ``UnetPatcher.clone`` deep-copies model options, and a
    function is kept as it is where a method would carry a copy of its object."""

    def refiner_conditioning_modifier(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        if not route.on_refiner:
            return model, x, timestep, uncond, cond, cond_scale, model_options, seed
        high, low = route.scores
        with torch.no_grad():
            cond = _converted(route, cond, high)
            uncond = _converted(route, uncond, low)
        return route.model, x, timestep, uncond, cond, cond_scale, model_options, seed

    return refiner_conditioning_modifier
