"""Stand-in of ``modules.sd_samplers_extra.restart_sampler`` (Restart, arXiv 2306.14878).

Same structure as 1.10.1: Heun steps over a Karras schedule shortened by the restart steps;
after the step that reaches sigma ~0.1 the segment back up to sigma 2 and down again is
repeated; noise is added whenever sigma goes up. The callback's ``i`` counts Heun steps.
"""

from __future__ import annotations

import itertools

import k_diffusion.sampling
import torch
from k_diffusion.sampling import get_sigmas_karras, to_d


def _restart_plan(sigmas):
    steps = sigmas.shape[0] - 1
    if steps < 20:
        return sigmas, {}
    restart_steps, restart_times = 9, 1
    if steps >= 36:
        restart_steps, restart_times = steps // 4, 2
    sigmas = get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device)
    return sigmas, {0.1: [restart_steps + 1, restart_times, 2]}


def _segments(sigmas, restart_list):
    at_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 not in at_index:
            continue
        restart_steps, restart_times, restart_max = at_index[i + 1]
        max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
        if max_idx < i + 1:
            back_up = get_sigmas_karras(restart_steps, sigmas[i + 1].item(), sigmas[max_idx].item(), device=sigmas.device)[:-1]
            for _ in range(restart_times):
                pairs.extend(itertools.pairwise(back_up))
    return pairs


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1., restart_list=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    if restart_list is None:
        sigmas, restart_list = _restart_plan(sigmas)

    last_sigma = None
    for step_id, (old_sigma, new_sigma) in enumerate(_segments(sigmas, restart_list)):
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + k_diffusion.sampling.torch.randn_like(x) * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = model(x, old_sigma * s_in, **extra_args)
        d = to_d(x, old_sigma, denoised)
        if callback is not None:
            callback({'x': x, 'i': step_id, 'sigma': new_sigma, 'sigma_hat': old_sigma, 'denoised': denoised})
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, new_sigma, model(x_2, new_sigma * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
        last_sigma = new_sigma
    return x
