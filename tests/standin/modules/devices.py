"""Stand-in of ``modules.devices``: device and dtypes (CPU, float32 in the tests), gc and autocast no-ops."""

from __future__ import annotations

import contextlib

import torch

cpu: torch.device = torch.device("cpu")
device: torch.device = torch.device("cpu")
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
dtype_inference: torch.dtype = torch.float32
unet_needs_upcast = False


def torch_gc() -> None:
    pass


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


def cond_cast_unet(input):
    return input.to(dtype_unet) if unet_needs_upcast else input


def randn_local(seed, shape):
    generator = torch.Generator(device=cpu).manual_seed(int(seed))
    return torch.randn(shape, generator=generator, device=cpu).to(device)


def test_for_nans(x, where) -> None:
    pass
