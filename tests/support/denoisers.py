"""The sampling stack the WebUI builds around an SDXL UNet, in small.

``TinySDXL`` plays the WebUI's SDXL model: the UNet sits at ``model.diffusion_model`` and
``apply_model(x, t, cond)`` calls it with ``context=cond["crossattn"], y=cond["vector"]``.
Around it: k-diffusion's ``CompVisDenoiser`` (an eps model with SDXL's ``alphas_cumprod``) and
classifier-free guidance (``CFGDenoiser``), whose forward takes ``cond``/``uncond`` as the
sampler's extra args, as the WebUI's does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from k_diffusion import sampling
from k_diffusion.external import CompVisDenoiser
from torch import nn

from sdxl_refiner.core.handoff import UNetSlot
from tests.support.tiny_unet import make_tiny_unet

Cond = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TinyWidths:
    """SDXL's layout at a small scale: two text encoders, pooled output, scalar embeddings."""

    first_text_width: int = 4
    second_text_width: int = 8
    scalar_embed_dim: int = 4
    tokens: int = 5

    @property
    def base_context_dim(self) -> int:
        return self.first_text_width + self.second_text_width

    @property
    def base_adm(self) -> int:
        return self.second_text_width + 6 * self.scalar_embed_dim

    @property
    def refiner_context_dim(self) -> int:
        return self.second_text_width

    @property
    def refiner_adm(self) -> int:
        return self.second_text_width + 5 * self.scalar_embed_dim


WIDTHS = TinyWidths()


def sdxl_alphas_cumprod() -> torch.Tensor:
    """SDXL's training schedule: scaled-linear betas from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


class UNetHolder(nn.Module):
    def __init__(self, diffusion_model: nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model


def slot_and_base() -> tuple[UNetSlot, nn.Module]:
    """A slot holding a one-weight base, for tests of the handoff's own accounting."""
    holder = UNetHolder(nn.Linear(1, 1))
    return UNetSlot(holder, "diffusion_model"), holder.diffusion_model


class TinySDXL(nn.Module):
    def __init__(self, unet: nn.Module):
        super().__init__()
        self.model = UNetHolder(unet)
        self.register_buffer("alphas_cumprod", sdxl_alphas_cumprod())

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model.diffusion_model(x, t, context=cond["crossattn"], y=cond["vector"])


class CFGDenoiser(nn.Module):
    """Classifier-free guidance; a cond batch may hold several prompts per image (AND prompts)."""

    def __init__(self, inner_model: CompVisDenoiser):
        super().__init__()
        self.inner_model = inner_model

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, uncond: Cond, cond_scale: float) -> torch.Tensor:
        images = x.shape[0]
        per_cond = cond["crossattn"].shape[0] // images
        per_uncond = uncond["crossattn"].shape[0] // images
        x_in = torch.cat([x.repeat_interleave(per_cond, 0), x.repeat_interleave(per_uncond, 0)])
        sigma_in = torch.cat([sigma.repeat_interleave(per_cond, 0), sigma.repeat_interleave(per_uncond, 0)])
        cond_in = {key: torch.cat([cond[key], uncond[key]]) for key in ("crossattn", "vector")}
        out = self.inner_model(x_in, sigma_in, cond=cond_in)
        split = images * per_cond
        denoised_cond = out[:split].unflatten(0, (images, per_cond)).mean(1)
        denoised_uncond = out[split:].unflatten(0, (images, per_uncond)).mean(1)
        return denoised_uncond + (denoised_cond - denoised_uncond) * cond_scale


def build_stack(unet: nn.Module) -> tuple[TinySDXL, CFGDenoiser]:
    sd_model = TinySDXL(unet)
    return sd_model, CFGDenoiser(CompVisDenoiser(sd_model))


def base_unet(seed: int = 1) -> nn.Module:
    return make_tiny_unet(seed, context_dim=WIDTHS.base_context_dim, adm_in_channels=WIDTHS.base_adm)


def refiner_unet(seed: int = 2) -> nn.Module:
    return make_tiny_unet(seed, context_dim=WIDTHS.refiner_context_dim, adm_in_channels=WIDTHS.refiner_adm)


def base_conds(rows: int, seed: int) -> Cond:
    """Base-type conds of ``rows`` prompts, as the base conditioner would lay them out."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "crossattn": torch.randn(rows, WIDTHS.tokens, WIDTHS.base_context_dim, generator=generator),
        "vector": torch.randn(rows, WIDTHS.base_adm, generator=generator),
    }


SCHEDULES = ("automatic", "karras", "exponential", "polyexponential")


def schedule_sigmas(schedule: str, denoiser: CompVisDenoiser, steps: int) -> torch.Tensor:
    """The WebUI's schedules: the model's own, or k-diffusion's over the model's sigma range."""
    if schedule == "automatic":
        return denoiser.get_sigmas(steps)
    sigma_min, sigma_max = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    make = {
        "karras": sampling.get_sigmas_karras,
        "exponential": sampling.get_sigmas_exponential,
        "polyexponential": sampling.get_sigmas_polyexponential,
    }[schedule]
    return make(steps, sigma_min, sigma_max)


BROWNIAN_SAMPLERS = frozenset({"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"})
EXACT_SAMPLERS = (
    "euler", "euler_ancestral", "lms", "heun", "dpm_2", "dpm_2_ancestral",
    "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
)


def run_sampler(
    sampler: str,
    model: Callable[..., torch.Tensor],
    sigmas: torch.Tensor,
    extra_args: Mapping[str, object],
    seed: int,
    callback: Callable[[dict], None] | None = None,
    shape: tuple[int, ...] = (1, 4, 8, 8),
    options: Mapping[str, object] | None = None,
) -> torch.Tensor:
    """One txt2img sampling run, seeded as the WebUI seeds it (global RNG; Brownian tree per image).

    ``options`` go to the sampler as they are (``eta``, ``s_churn``)."""
    torch.manual_seed(seed)
    x = torch.randn(shape) * sigmas[0]
    function = getattr(sampling, f"sample_{sampler}")
    kwargs: dict[str, object] = dict(options or {})
    if sampler in BROWNIAN_SAMPLERS:
        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        seeds = [seed + index for index in range(shape[0])]
        kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)
    if sampler in ("dpm_fast", "dpm_adaptive"):
        sigma_min, sigma_max = sigmas[sigmas > 0].min().item(), sigmas.max().item()
        limits: tuple[object, ...] = (sigma_min, sigma_max, len(sigmas) - 1) if sampler == "dpm_fast" else (sigma_min, sigma_max)
        return function(model, x, *limits, extra_args=dict(extra_args), callback=callback, disable=True)
    return function(model, x, sigmas, extra_args=dict(extra_args), callback=callback, disable=True, **kwargs)


class NamedUNet(nn.Module):
    """A UNet that writes its name into a shared log each time it runs."""

    def __init__(self, unet: nn.Module, name: str, log: list[tuple[str, object]]):
        super().__init__()
        self.unet = unet
        self.name = name
        self.log = log

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.log.append(("unet", self.name))
        return self.unet(x, timesteps, context=context, y=y)


@dataclass(frozen=True)
class TracedCall:
    sigma: float
    unet: str
    step: int


def traced(model: Callable[..., torch.Tensor], log: list[tuple[str, object]]) -> Callable[..., torch.Tensor]:
    """The sampler's model, logging the sigma of every call before it runs."""

    def call(x: torch.Tensor, sigma: torch.Tensor, **extra_args: object) -> torch.Tensor:
        log.append(("call", float(sigma[0])))
        return model(x, sigma, **extra_args)

    return call


def step_logger(log: list[tuple[str, object]]) -> Callable[[dict], None]:
    return lambda info: log.append(("step", int(info["i"])))


def attribute_calls(log: list[tuple[str, object]]) -> list[TracedCall]:
    """Each model call with the step it belongs to, read from the sampler's own callbacks.

    Every k-diffusion sampler calls back for step ``i`` right after the first call of step
    ``i``; a call followed by another call (or by the end) is a second call, of the step the
    last callback named.
    """
    calls: list[TracedCall] = []
    last_step = -1
    events = [event for event in log if event[0] in ("call", "step")]
    unets = iter(name for kind, name in log if kind == "unet")
    for position, (kind, value) in enumerate(events):
        if kind == "step":
            last_step = int(value)  # type: ignore[arg-type]
            continue
        following = events[position + 1] if position + 1 < len(events) else None
        step = int(following[1]) if following is not None and following[0] == "step" else last_step  # type: ignore[arg-type]
        calls.append(TracedCall(float(value), next(unets), step))  # type: ignore[arg-type]
    return calls
