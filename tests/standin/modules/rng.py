"""Stand-in of ``modules.rng.ImageRNG``: one generator per image seed; ``next()`` draws a batch.

As in 1.10.1, the first draw also seeds the global torch RNG with each image's seed
(``rng.randn`` calls ``torch.manual_seed``), so what draws from the global RNG later (img2img's
VAE encode of the next request) depends on the seeds used before.
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
        self.is_first = True

    def next(self):
        noise = []
        for seed, generator in zip(self.seeds, self.generators, strict=True):
            if self.is_first:
                torch.manual_seed(int(seed))
            noise.append(torch.randn(self.shape, generator=generator, device=devices.cpu))
        self.is_first = False
        return torch.stack(noise).to(devices.device)
