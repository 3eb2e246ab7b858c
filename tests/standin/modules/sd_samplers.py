"""Stand-in of ``modules.sd_samplers`` (1.10.1): the sampler list and ``create_sampler``."""

from __future__ import annotations

from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_lcm, sd_samplers_timesteps

all_samplers = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
    *sd_samplers_timesteps.samplers_data_timesteps,
    *sd_samplers_lcm.samplers_data_lcm,
]
all_samplers_map = {x.name: x for x in all_samplers}

samplers: list[sd_samplers_common.SamplerData] = all_samplers
samplers_for_img2img: list[sd_samplers_common.SamplerData] = all_samplers
samplers_map = {}
for _sampler in all_samplers:
    samplers_map[_sampler.name.lower()] = _sampler.name
    for _alias in _sampler.aliases:
        samplers_map[_alias.lower()] = _sampler.name


def find_sampler_config(name):
    if name is not None:
        return all_samplers_map.get(name)
    return all_samplers[0]


def create_sampler(name, model):
    config = find_sampler_config(name)

    assert config is not None, f'bad sampler name: {name}'

    if model.is_sdxl and config.options.get("no_sdxl", False):
        raise Exception(f"Sampler {config.name} is not supported for SDXL")

    sampler = config.constructor(model)
    sampler.config = config

    return sampler
