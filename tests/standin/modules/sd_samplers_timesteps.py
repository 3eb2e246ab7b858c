"""Stand-in of ``modules.sd_samplers_timesteps`` (1.10.1): CompVisSampler and its denoiser.

The sampler passes integer timesteps, not sigmas, through ``self.func(model, x, timesteps, ...)``.
Simplified: DDIM (one model call per step) and PLMS (a second call in its first step, then
Adams-Bashforth over the last eps) are implemented with 1.10.1's loop of ``len(timesteps) - 1``
steps; UniPC and DDIM CFG++ are listed under their names but raise if run.
"""

from __future__ import annotations

import inspect

import k_diffusion.sampling
import torch
from modules import devices, sd_samplers_common, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.shared import opts


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones(x.shape[0])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        sigma_t = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        x = a_prev ** 0.5 * pred_x0 + (1. - a_prev - sigma_t ** 2) ** 0.5 * e_t + sigma_t * k_diffusion.sampling.torch.randn_like(x)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': 0, 'sigma_hat': 0, 'denoised': pred_x0})
    return x


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_eps: list[torch.Tensor] = []

    def step_from(x, e_t, index):
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        return a_prev ** 0.5 * pred_x0 + (1. - a_prev) ** 0.5 * e_t, pred_x0

    weights = {0: [1.0], 1: [3 / 2, -1 / 2], 2: [23 / 12, -16 / 12, 5 / 12], 3: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        if not old_eps:
            x_prev, _ = step_from(x, e_t, index)
            e_t_next = model(x_prev, timesteps[max(index - 1, 0)].item() * s_in, **extra_args)
            e_t_prime = (e_t + e_t_next) / 2
        else:
            history = [e_t, *reversed(old_eps)]
            e_t_prime = sum(w * e for w, e in zip(weights[len(old_eps)], history, strict=False))
        x_prev, pred_x0 = step_from(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': 0, 'sigma_hat': 0, 'denoised': pred_x0})
    return x


def _not_in_standin(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    raise NotImplementedError("this timestep sampler is listed but not implemented in the stand-in")


def ddim_cfgpp(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    return _not_in_standin(model, x, timesteps, extra_args, callback, disable, eta)


def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None):
    return _not_in_standin(model, x, timesteps, extra_args, callback, disable)

samplers_timesteps = [
    ('DDIM', ddim, ['ddim'], {}),
    ('DDIM CFG++', ddim_cfgpp, ['ddim_cfgpp'], {}),
    ('PLMS', plms, ['plms'], {}),
    ('UniPC', unipc, ['unipc'], {}),
]

samplers_data_timesteps = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: CompVisSampler(funcname, model), aliases, options)
    for label, funcname, aliases, options in samplers_timesteps
]


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        ts = sigma.to(dtype=int)
        a_t = self.alphas[ts][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.eta_option_field = 'eta_ddim'
        self.eta_infotext_field = 'Eta DDIM'
        self.eta_default = 0.0
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        discard_next_to_last_sigma = self.config is not None and self.config.options.get('discard_next_to_last_sigma', False)
        if opts.always_discard_next_to_last_sigma and not discard_next_to_last_sigma:
            discard_next_to_last_sigma = True
        steps += 1 if discard_next_to_last_sigma else 0
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps)), device=devices.device) + 1, 0, 999)

    def _extra_args(self, p, conditioning, unconditional_conditioning, image_conditioning):
        return {
            'cond': conditioning,
            'image_cond': image_conditioning,
            'uncond': unconditional_conditioning,
            'cond_scale': p.cfg_scale,
            's_min_uncond': self.s_min_uncond
        }

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        timesteps_sched = timesteps[:t_enc]
        alphas_cumprod = shared.sd_model.alphas_cumprod
        xi = x * torch.sqrt(alphas_cumprod[timesteps[t_enc]]) + noise * torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])

        extra_params_kwargs = self.initialize(p)
        if 'timesteps' in inspect.signature(self.func).parameters:
            extra_params_kwargs['timesteps'] = timesteps_sched

        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        samples = self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=self.sampler_extra_args, disable=True, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        timesteps = self.get_timesteps(p, steps)

        extra_params_kwargs = self.initialize(p)
        if 'timesteps' in inspect.signature(self.func).parameters:
            extra_params_kwargs['timesteps'] = timesteps

        self.last_latent = x
        self.sampler_extra_args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        samples = self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=True, callback=self.callback_state, **extra_params_kwargs))
        self.add_infotext(p)
        return samples
