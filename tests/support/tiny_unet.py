"""A small UNet with SDXL's call signature, ``unet(x, timesteps, context=..., y=...)``.

Small enough for a CPU test, yet every input reaches the output: the timestep and the ``y``
vector through an embedding added to the features, the text context through a cross-attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = values.float().reshape(-1, 1) * frequencies.to(values.device)[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TinyUNet(nn.Module):
    def __init__(self, *, channels: int = 4, model_channels: int = 16, context_dim: int = 12, adm_in_channels: int = 32):
        super().__init__()
        self.model_channels = model_channels
        self.context_dim = context_dim
        self.adm_in_channels = adm_in_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, model_channels), nn.SiLU())
        self.label_emb = nn.Linear(adm_in_channels, model_channels)
        self.conv_in = nn.Conv2d(channels, model_channels, 3, padding=1)
        self.to_q = nn.Linear(model_channels, model_channels, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * model_channels, bias=False)
        self.conv_mid = nn.Conv2d(model_channels, model_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(model_channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(sinusoidal(timesteps, self.model_channels).to(x.dtype)) + self.label_emb(y)
        h = self.conv_in(x) + emb[:, :, None, None]
        batch, width, height, breadth = h.shape
        tokens = h.flatten(2).transpose(1, 2)
        keys, values = self.to_kv(context).chunk(2, dim=-1)
        attention = torch.softmax(self.to_q(tokens) @ keys.transpose(1, 2) / math.sqrt(width), dim=-1)
        h = h + (attention @ values).transpose(1, 2).reshape(batch, width, height, breadth)
        h = self.conv_mid(torch.nn.functional.silu(h))
        return self.conv_out(torch.nn.functional.silu(h))


def make_tiny_unet(seed: int, **dims: int) -> TinyUNet:
    """A TinyUNet whose weights depend on ``seed`` only; the global RNG is left untouched."""
    unet = TinyUNet(**dims)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in unet.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else parameter.numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return unet.eval()
