"""The refiner noise against k-diffusion's own samplers, with no host: which samplers it acts on,
that a sampler left to its default noise draws exactly that noise, and that scaling it is ``s_noise``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from k_diffusion import sampling

from sdxl_refiner.core.refiner_noise import adds_noise, takes_noise_sampler, with_refiner_noise

NOISE_SAMPLERS = [sampling.sample_euler_ancestral, sampling.sample_dpm_2_ancestral, sampling.sample_dpmpp_2s_ancestral,
                  sampling.sample_dpmpp_sde, sampling.sample_dpmpp_2m_sde, sampling.sample_dpmpp_3m_sde]


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """The WebUI's LCM signature: a noise sampler and no eta."""
    return x


@pytest.mark.parametrize(("func", "kwargs", "adds"), [
    (sampling.sample_euler, {}, False),
    (sampling.sample_dpmpp_2m, {}, False),
    (sampling.sample_heun, {"s_noise": 1.0}, False),
    (sampling.sample_euler_ancestral, {}, True),
    (sampling.sample_euler_ancestral, {"eta": 0.0}, False),
    (sampling.sample_dpmpp_2m_sde, {"eta": 0.5}, True),
    (sampling.sample_dpmpp_3m_sde, {"eta": 0}, False),
    (sampling.sample_dpm_fast, {}, False),  # its own default eta is 0
    (sampling.sample_dpm_fast, {"eta": 1.0}, True),
    (sampling.sample_dpm_adaptive, {"eta": 1.0}, True),
    (sample_lcm, {}, True),
])
def test_it_acts_on_samplers_that_draw_through_a_noise_sampler_with_an_eta_above_0(func, kwargs, adds):
    assert adds_noise(func, kwargs) is adds


def test_at_one_or_without_a_noise_sampler_the_arguments_are_left_as_they_are():
    kwargs = {"eta": 1.0}
    handoff = SimpleNamespace(on_refiner=True)
    x = torch.zeros(1, 4, 8, 8)
    assert with_refiner_noise(sampling.sample_euler_ancestral, x, kwargs, handoff, 1.0) is kwargs
    assert with_refiner_noise(sampling.sample_euler, x, kwargs, handoff, 0.5) is kwargs
    assert not takes_noise_sampler(sampling.sample_lms)


def model(x, sigma, **_):
    """A deterministic denoiser: the sample pulled towards a fixed pattern, harder at low noise."""
    pattern = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    return (x + pattern * sigma.reshape(-1, 1, 1, 1) ** 2) / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


SIGMAS = sampling.get_sigmas_karras(6, 0.03, 14.6)


def run(func, noise_kwargs: dict | None = None, *, on_refiner: bool = False, multiplier: float = 1.0) -> torch.Tensor:
    """One sampling run from a seeded start; with a multiplier the wrapper is built where the binding
    builds it, right before the sampler is called (a Brownian tree draws its seed when built)."""
    torch.manual_seed(3)
    x = torch.randn(1, 4, 8, 8) * SIGMAS[0]
    kwargs = dict(noise_kwargs or {})
    if multiplier != 1:
        kwargs = with_refiner_noise(func, x, {**kwargs, "sigmas": SIGMAS}, SimpleNamespace(on_refiner=on_refiner),
                                    multiplier)
        kwargs.pop("sigmas")
    return func(model, x, SIGMAS, disable=True, **kwargs)


@pytest.mark.parametrize("func", NOISE_SAMPLERS, ids=lambda f: f.__name__)
def test_a_sampler_given_no_noise_sampler_draws_the_noise_of_its_own_default(func):
    """The WebUI gives SDE samplers no Brownian tree under "no_dpmpp_sde_batch_determinism", and
    ancestral ones never: the wrapper then builds the sampler's own default, drawn the same way."""
    assert torch.equal(run(func, multiplier=0.5, on_refiner=False), run(func))


@pytest.mark.parametrize("func", NOISE_SAMPLERS[:4], ids=lambda f: f.__name__)
def test_scaled_noise_throughout_is_k_diffusions_s_noise_to_the_bit(func):
    """These samplers add ``noise * s_noise * sigma_up``: scaling the noise first is the same product."""
    scaled = run(func, multiplier=0.6, on_refiner=True)
    assert torch.equal(scaled, run(func, {"s_noise": 0.6}))
    assert not torch.equal(scaled, run(func))


def test_a_given_noise_sampler_is_scaled_only_while_the_refiner_holds_the_slot():
    handoff = SimpleNamespace(on_refiner=False)
    draws = iter([torch.full((2,), 1.0), torch.full((2,), 2.0), torch.full((2,), 3.0)])
    kwargs = with_refiner_noise(sampling.sample_dpmpp_2m_sde, torch.zeros(2), {"noise_sampler": lambda s, n: next(draws)},
                                handoff, 0.25)
    before = kwargs["noise_sampler"](1.0, 0.5)
    handoff.on_refiner = True
    after = [kwargs["noise_sampler"](0.5, 0.2), kwargs["noise_sampler"](0.2, 0.1)]
    assert [before.tolist(), *(a.tolist() for a in after)] == [[1.0, 1.0], [0.5, 0.5], [0.75, 0.75]]
