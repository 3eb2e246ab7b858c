"""Stand-in of ``modules.sd_schedulers``: the schedule types the stand-in samplers use.

Simplified: Automatic, Uniform, Karras and Exponential only (the functions are k-diffusion's).
"""

from __future__ import annotations

import dataclasses

import k_diffusion.sampling


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: object
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    return inner_model.get_sigmas(n).to(device)


schedulers = [
    Scheduler('automatic', 'Automatic', None),
    Scheduler('uniform', 'Uniform', uniform, need_inner_model=True),
    Scheduler('karras', 'Karras', k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler('exponential', 'Exponential', k_diffusion.sampling.get_sigmas_exponential),
]

schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
