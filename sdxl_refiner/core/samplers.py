"""Where the switch falls for each sampler the WebUI lists, from the sigmas it really uses.

k-diffusion samplers (and LCM, one call per step) are placed exactly by the engine's plan.
The WebUI's timestep samplers DDIM and PLMS loop over ``len(timesteps) - 1`` steps of one model
call each (PLMS makes a second one in its first step), so they are placed by counting calls.
Refused, with a reason: Restart runs extra segments that climb back up in noise, so no single
step of it is a point where the base could hand over; UniPC's corrector reuses the previous
call's output across steps; DDIM CFG++ sets attributes on the denoiser it is given.
"""

from __future__ import annotations

import inspect

import torch

from sdxl_refiner.core.errors import Cause, PlanError
from sdxl_refiner.core.schedule import (
    SUPPORTED_SAMPLERS,
    SwitchPoint,
    sampler_key,
    switch_point,
    switch_point_from_calls,
)

# LCM, DDIM, and Forge's IPNDM, IPNDM_V, DEIS and DDPM: one model call per step, at the step's own sigma
# (the multistep ones keep their history in the sampler, which the handoff leaves running).
ONE_CALL_PER_STEP = frozenset({"sample_lcm", "ddim", "sample_ipndm", "sample_ipndm_v", "sample_deis", "sample_ddpm"})
TIMESTEP_SAMPLERS = frozenset({"ddim", "plms"})
# The WebUI's labels of the samplers refused below; javascript/sdxl_refiner.js names the same ones
# under the slider before the user generates.
REFUSED_SAMPLER_LABELS = ("DDIM CFG++", "UniPC", "Restart")
# The WebUI's labels of the samplers whose fresh noise the refiner noise scales (they take a k-diffusion
# noise sampler); javascript/sdxl_refiner.js says under the slider that it has no effect with others.
NOISE_SAMPLER_LABELS = ("Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
                        "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "LCM")
PICK_INSTEAD = "Pick Euler, Euler a, DPM++ 2M, DPM++ 2M SDE, DPM++ SDE, Heun or LMS"


def function_name(sampler) -> str:
    """The k-diffusion function name (``sample_euler``), or the callable's name for the WebUI's own."""
    funcname = getattr(sampler, "funcname", None)
    if isinstance(funcname, str):
        return funcname
    return getattr(funcname, "__name__", type(sampler).__name__)


def sampler_label(sampler) -> str:
    config = getattr(sampler, "config", None)
    return getattr(config, "name", None) or function_name(sampler)


def refuse_unsupported(sampler, func) -> None:
    """Refuse before sampling a sampler whose switch cannot be placed exactly."""
    label = sampler_label(sampler)
    if "timesteps" in inspect.signature(func).parameters and function_name(sampler) not in TIMESTEP_SAMPLERS:
        raise PlanError(
            f"Sampler {label!r} steps through timesteps, not sigmas, and its model calls per step are not "
            f"ones the SDXL Refiner can place its switch between. {PICK_INSTEAD}, DDIM or PLMS, or turn "
            "SDXL Refiner off."
        )
    if function_name(sampler) == "restart_sampler":
        raise PlanError(
            f"Sampler {label!r} adds restart segments that go back up in noise after its steps, so there is "
            f"no single step at which the base can hand over. {PICK_INSTEAD}, or turn SDXL Refiner off."
        )
    name = function_name(sampler)
    if name not in ONE_CALL_PER_STEP | TIMESTEP_SAMPLERS and sampler_key(name) not in SUPPORTED_SAMPLERS:
        raise PlanError(
            f"Sampler {label!r} is not one whose model calls per step SDXL Refiner knows (HeunPP2, say, evaluates "
            f"the next steps' sigmas inside a step), so it cannot hand over exactly at a step. {PICK_INSTEAD}, "
            "or turn SDXL Refiner off."
        )


def sigmas_used(kwargs: dict, schedule: torch.Tensor | None) -> torch.Tensor:
    """The sigmas of this pass as the sampler runs them.

    With a ``sigmas`` argument they are given (img2img slicing and the discarded next-to-last
    sigma included). DPM fast and adaptive get only ``sigma_max``: their pass is the tail of the
    schedule the WebUI computed, from ``sigma_max`` down.
    """
    for name in ("sigmas", "timesteps"):
        if name in kwargs:
            return torch.as_tensor(kwargs[name]).detach().cpu()
    if schedule is None:
        raise PlanError(
            "The sampler's sigma schedule was not seen before sampling; cannot place the switch.", Cause.CONFLICT
        )
    schedule = schedule.detach().cpu()
    sigma_max = float(kwargs.get("sigma_max", schedule[0]))
    start = int((schedule > sigma_max * (1 + 1e-4)).sum())
    return schedule[start:]


def switch_point_for(sampler, sigmas: torch.Tensor, base_steps: int, eta: float) -> SwitchPoint:
    name = function_name(sampler)
    steps = len(sigmas) - 1
    if name == "plms":
        return switch_point_from_calls([2] + [1] * (steps - 1), base_steps)
    if name in ONE_CALL_PER_STEP:
        return switch_point_from_calls([1] * steps, base_steps, None if name in TIMESTEP_SAMPLERS else sigmas)
    return switch_point(name, sigmas, base_steps, eta=eta)
