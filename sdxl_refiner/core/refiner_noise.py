"""The refiner's noise: the fresh noise of ancestral and SDE samplers, scaled on the refiner's steps alone.

k-diffusion's samplers add ``noise_sampler(sigma, sigma_next) * s_noise * ...`` after the model
calls of a step, so scaling what the noise sampler returns is ``s_noise`` for that step. Each
step draws its noise after its first model call, so the noise drawn while the refiner holds the
slot is exactly the noise of the refiner's steps: the handoff's latch decides, not a sigma.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch
from k_diffusion.sampling import BrownianTreeNoiseSampler, default_noise_sampler

from sdxl_refiner.core.handoff import Handoff

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# k-diffusion's SDE samplers build a Brownian tree when given no noise sampler; the others draw
# torch.randn_like (the WebUI's seeded generator) through default_noise_sampler.
BROWNIAN_DEFAULT = frozenset({"sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"})


def takes_noise_sampler(func: Callable[..., object]) -> bool:
    return "noise_sampler" in inspect.signature(func).parameters


def adds_noise(func: Callable[..., object], kwargs: Mapping[str, object]) -> bool:
    """True when the sampler draws fresh noise through a noise sampler: ancestral and SDE ones, with
    an eta above 0 (the generation's, else the function's default; LCM has none and always adds)."""
    parameters = inspect.signature(func).parameters
    if "noise_sampler" not in parameters:
        return False
    if "eta" not in parameters:
        return True
    return float(kwargs.get("eta", parameters["eta"].default)) != 0


def _sampler_default(func: Callable[..., object], x: torch.Tensor, kwargs: Mapping[str, object]) -> NoiseSampler:
    """The noise sampler ``func`` would build itself, built the same way so its draws are unchanged."""
    if getattr(func, "__name__", "") in BROWNIAN_DEFAULT:
        sigmas = torch.as_tensor(kwargs["sigmas"])
        return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max())
    return default_noise_sampler(x)


def scaled_on_refiner(noise_sampler: NoiseSampler, handoff: Handoff, multiplier: float) -> NoiseSampler:
    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        noise = noise_sampler(sigma, sigma_next)
        return noise * multiplier if handoff.on_refiner else noise

    return sample


def with_refiner_noise(
    func: Callable[..., object], x: torch.Tensor, kwargs: dict[str, object], handoff: Handoff, multiplier: float
) -> dict[str, object]:
    """The sampler's keyword arguments with the refiner's noise multiplier in place; unchanged at 1."""
    if multiplier == 1 or not takes_noise_sampler(func):
        return kwargs
    inner = kwargs.get("noise_sampler") or _sampler_default(func, x, kwargs)
    return {**kwargs, "noise_sampler": scaled_on_refiner(inner, handoff, multiplier)}  # type: ignore[arg-type]
