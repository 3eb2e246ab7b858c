"""Stand-in of ``modules.rng.ImageRNG``: one generator per image seed; ``next()`` draws a batch.

Simplified: no subseeds, no seed resize; CPU generators, as the WebUI's default "CPU" RNG.
"""

from __future__ import annotations

import torch
from modules import devices


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.generators = [torch.Generator(device=devices.cpu).manual_seed(int(seed)) for seed in seeds]

    def next(self):
        noise = [torch.randn(self.shape, generator=generator, device=devices.cpu) for generator in self.generators]
        return torch.stack(noise).to(devices.device)
