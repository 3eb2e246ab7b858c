"""Stand-in of ``modules.sd_samplers_lcm`` (1.10.1): LCM as a KDiffusionSampler, one model call per step.

Simplified: it uses the k-diffusion CFG denoiser instead of the LCM-specific one.
"""

from __future__ import annotations

import torch
from k_diffusion.sampling import default_noise_sampler
from modules import sd_samplers_common, sd_samplers_kdiffusion


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


class LCMSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    pass


samplers_lcm = [('LCM', sample_lcm, ['k_lcm'], {})]
samplers_data_lcm = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: LCMSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_lcm
]
