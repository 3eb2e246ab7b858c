"""Writes small checkpoints in the real single-file layouts (SDXL refiner/base/inpainting, SD 1.x/2.x,
UNet-only), so classification and loading are tested on real safetensors files with real key names.

UNet widths are small; the text-encoder signature tensors keep their real names and take a
configurable width, and ``filler_bytes`` adds large non-UNet tensors to prove they are never read.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from tests.support.sgm_unet import SgmUNet

UNET_PREFIX = "model.diffusion_model."
SCALAR_EMBED_DIM = 256

Kind = Literal["refiner", "base", "inpaint", "sd1", "sd2", "unet_only_refiner", "unet_only_base"]


def small_unet_params(
    kind: Literal["refiner", "base", "inpaint", "sd1", "sd2"] = "refiner",
    *,
    model_channels: int = 32,
    context_dim: int | None = None,
    pooled_dim: int = 64,
) -> dict:
    """sgm ``network_config.params`` of a small UNet shaped like the released model of that kind.

    The ADM widths follow sgm's make-up (pooled text embedding plus 256 channels per scalar), so a
    UNet-only file of this config is recognised the way a released one is.
    """
    params: dict = dict(
        in_channels=4,
        out_channels=4,
        model_channels=model_channels,
        attention_resolutions=[2],
        num_res_blocks=1,
        channel_mult=[1, 2],
        num_head_channels=64,
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=1,
        legacy=False,
    )
    if kind == "refiner":
        context = context_dim or pooled_dim
        params.update(
            context_dim=context, adm_in_channels=context + 5 * SCALAR_EMBED_DIM, num_classes="sequential"
        )
    elif kind in ("base", "inpaint"):
        context = context_dim or pooled_dim + 32
        params.update(
            context_dim=context, adm_in_channels=pooled_dim + 6 * SCALAR_EMBED_DIM, num_classes="sequential"
        )
        if kind == "inpaint":
            params["in_channels"] = 9
    else:
        params.update(
            context_dim=context_dim or (768 if kind == "sd1" else 1024),
            use_linear_in_transformer=kind == "sd2",
            attention_resolutions=[2, 1],
            num_head_channels=32,
        )
    return params


def build_unet(params: Mapping[str, object], *, device: str | torch.device = "cpu") -> SgmUNet:
    """Builds the UNet with weights from a seeded generator and leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        return SgmUNet(**params).to(device)


def random_unet_state(
    params: Mapping[str, object], *, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 0.05
) -> dict[str, torch.Tensor]:
    """Random weights for the layout of ``params``, drawn from a private generator."""
    with torch.device("meta"):
        layout = SgmUNet(**params).state_dict()
    generator = torch.Generator().manual_seed(seed)
    return {
        key: (torch.randn(tuple(value.shape), generator=generator) * scale).to(dtype)
        for key, value in layout.items()
    }


def _text_encoder_tensors(
    kind: Kind, width: int, filler_bytes: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    def t(*shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)

    def open_clip(prefix: str, w: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}ln_final.weight": t(w),
            f"{prefix}ln_final.bias": t(w),
            f"{prefix}positional_embedding": t(77, w),
            f"{prefix}text_projection": t(w, w),
            f"{prefix}transformer.resblocks.0.attn.in_proj_weight": t(3 * w, w),
        }

    def clip_l(prefix: str, w: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}text_model.final_layer_norm.weight": t(w),
            f"{prefix}text_model.embeddings.position_embedding.weight": t(77, w),
            f"{prefix}text_model.encoder.layers.0.self_attn.q_proj.weight": t(w, w),
        }

    if kind == "refiner":
        tensors = open_clip("conditioner.embedders.0.model.", width)
    elif kind in ("base", "inpaint"):
        tensors = {
            **clip_l("conditioner.embedders.0.transformer.", width),
            **open_clip("conditioner.embedders.1.model.", width),
        }
    elif kind == "sd1":
        tensors = clip_l("cond_stage_model.transformer.", width)
    elif kind == "sd2":
        tensors = open_clip("cond_stage_model.model.", width)
    else:
        tensors = {}
    if kind in ("refiner", "base", "inpaint", "sd1", "sd2"):
        tensors["first_stage_model.decoder.conv_in.weight"] = t(8, 4, 3, 3)
    if filler_bytes:
        element = torch.empty((), dtype=dtype).element_size()
        # Named to sort after the UNet keys: non-UNet bytes both before and after them in the file.
        tensors["first_stage_model.filler"] = torch.ones(filler_bytes // element // 2, dtype=dtype)
        tensors["zz_filler.weight"] = torch.ones(filler_bytes // element // 2, dtype=dtype)
    return tensors


def write_checkpoint(
    path: str | os.PathLike,
    kind: Kind = "refiner",
    *,
    unet_state: Mapping[str, torch.Tensor] | None = None,
    unet_params: Mapping[str, object] | None = None,
    text_width: int = 32,
    filler_bytes: int = 0,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
) -> Path:
    """Writes a single-file checkpoint of ``kind``; the UNet is ``unet_state`` (keys without prefix)
    or random weights for ``unet_params`` (default: ``small_unet_params`` of the kind)."""
    unet_kind = kind.removeprefix("unet_only_")
    if unet_state is None:
        params = unet_params or small_unet_params(unet_kind)
        unet_state = random_unet_state(params, seed=seed, dtype=dtype)
    tensors = {UNET_PREFIX + key: value.detach().to(dtype).contiguous() for key, value in unet_state.items()}
    tensors.update(_text_encoder_tensors(kind, text_width, filler_bytes, dtype))
    path = Path(path)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_unet_only(
    path: str | os.PathLike, kind: Literal["refiner", "base"] = "refiner", **options: object
) -> Path:
    return write_checkpoint(path, f"unet_only_{kind}", **options)


def write_pickle_checkpoint(path: str | os.PathLike, kind: Kind = "refiner", **options: object) -> Path:
    """The same content as ``write_checkpoint`` as a ``.ckpt`` (a zip pickle with a ``state_dict``)."""
    scratch = Path(path).with_suffix(".tmp.safetensors")
    write_checkpoint(scratch, kind, **options)
    from safetensors.torch import load_file

    state = load_file(str(scratch))
    scratch.unlink()
    torch.save({"state_dict": state}, path)
    return Path(path)


_HEADER_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def _packed_header(shapes: Mapping[str, Sequence[int]], dtype: torch.dtype) -> tuple[bytes, int]:
    """The padded JSON header of a file holding ``shapes`` in ``dtype``, and its data size."""
    element = torch.empty((), dtype=dtype).element_size()
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in sorted(shapes):
        nbytes = math.prod(shapes[key]) * element
        header[key] = {
            "dtype": _HEADER_DTYPES[dtype],
            "shape": list(shapes[key]),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8), offset


def write_sparse_checkpoint(
    path: str | os.PathLike, shapes: Mapping[str, Sequence[int]], dtype: torch.dtype = torch.float16
) -> Path:
    """A safetensors file with the given tensors at full size whose data region is a hole.

    Released-size layouts (gigabytes) cost no disk and no time this way; a reader that touches
    tensor data gets zeros, one that reads only the header is exactly what is being tested.
    """
    encoded, data_bytes = _packed_header(shapes, dtype)
    path = Path(path)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        file.truncate(8 + len(encoded) + data_bytes)
    return path


def write_filled_checkpoint(
    path: str | os.PathLike,
    shapes: Mapping[str, Sequence[int]],
    dtype: torch.dtype = torch.float16,
    *,
    block_bytes: int = 16 * 2**20,
    seed: int = 0,
) -> Path:
    """Like ``write_sparse_checkpoint`` but every tensor byte is written (a repeated random block),
    streamed so that files of many gigabytes need no more memory than one block."""
    encoded, data_bytes = _packed_header(shapes, dtype)
    generator = torch.Generator().manual_seed(seed)
    block = (torch.rand(block_bytes // 2, generator=generator) * 2 - 1).to(torch.float16).numpy().tobytes()
    path = Path(path)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        remaining = data_bytes
        while remaining:
            chunk = min(remaining, len(block))
            file.write(block[:chunk])
            remaining -= chunk
    return path
