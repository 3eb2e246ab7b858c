"""The refiner's conditioning, built from the base's (generative-models' SDXL configs).

The released base and refiner share one frozen text encoder, so the refiner's text context is
the tail of the base's and its vector is the base's with the target-size embedding replaced by
the aesthetic score's. Every width comes from the refiner UNet (``RefinerCondSpec``), never
from constants: fine-tunes and the small test models have other widths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from sdxl_refiner.core.errors import Cause, ConditioningError

TEXT_CONTEXT_KEY = "crossattn"
VECTOR_KEY = "vector"


def timestep_embedding(values: torch.Tensor, dim: int) -> torch.Tensor:
    """generative-models' sinusoidal embedding of scalars, one row of ``dim`` per value.

    ``cat(cos(v * f), sin(v * f))`` with ``f_j = exp(-ln(10000) * j / (dim // 2))``, computed in
    float32 as sgm computes it, so the refiner sees the embedding it was trained on.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    )
    angles = values.reshape(-1, 1).float() * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


@dataclass(frozen=True)
class RefinerCondSpec:
    """What the refiner UNet takes, read from the UNet itself.

    ``kind`` "refiner": a refiner-type UNet (text context of the second encoder only, aesthetic
    score in the vector); "base": a base-type SDXL UNet used as refiner, which takes the base's
    conditioning unchanged. ``scalar_embed_dim``: width of one embedded scalar (sgm's
    ``ConcatTimestepEmbedderND`` outdim).
    """

    kind: Literal["refiner", "base"]
    context_dim: int
    adm_in_channels: int
    scalar_embed_dim: int


def refiner_conditioning(
    base: Mapping[str, torch.Tensor], spec: RefinerCondSpec, aesthetic_score: float
) -> dict[str, torch.Tensor]:
    """The refiner's conds for one of the base's (the prompt's or the negative's).

    The caller passes the score that fits the cond: the aesthetic score for the prompt (6.0 by
    default) and the negative aesthetic score for the negative prompt (2.5). Keys other than
    the text context and the vector (an inpainting concat, say) pass through unchanged.
    """
    if spec.kind == "base":
        cond = dict(base)
        check_fits_unet(cond, spec)
        return cond
    context = _required(base, TEXT_CONTEXT_KEY)
    vector = _required(base, VECTOR_KEY)
    kept_width = spec.adm_in_channels - spec.scalar_embed_dim
    # sgm's embedding of one scalar is cos and sin pairs: narrower than 2 it holds no score at all
    if spec.scalar_embed_dim < 2 or kept_width < 1:
        raise ConditioningError(
            f"refiner UNet: ADM input width {spec.adm_in_channels} leaves no room for the base's vector "
            f"besides an aesthetic embedding of {spec.scalar_embed_dim}. This checkpoint is not a refiner-type "
            "SDXL UNet; choose an SDXL refiner or base checkpoint."
        )
    if context.shape[-1] < spec.context_dim:
        raise ConditioningError(
            f"base text context: width {context.shape[-1]} is narrower than the refiner UNet's context "
            f"dim {spec.context_dim}. The refiner does not belong to this base; choose a refiner made for it."
        )
    if vector.ndim != 2 or vector.shape[1] < kept_width:
        raise ConditioningError(
            f"base vector: shape {tuple(vector.shape)} has fewer than the {kept_width} columns the refiner "
            f"keeps (ADM width {spec.adm_in_channels} minus aesthetic embedding {spec.scalar_embed_dim}). "
            "The refiner does not belong to this base; choose a refiner made for it."
        )
    score = torch.tensor([float(aesthetic_score)], device=vector.device)
    aesthetic = timestep_embedding(score, spec.scalar_embed_dim).to(vector.dtype)
    cond = dict(base)
    cond[TEXT_CONTEXT_KEY] = context[..., -spec.context_dim :]
    cond[VECTOR_KEY] = torch.cat([vector[:, :kept_width], aesthetic.expand(vector.shape[0], -1)], dim=1)
    check_fits_unet(cond, spec)
    return cond


def check_fits_unet(cond: Mapping[str, torch.Tensor], spec: RefinerCondSpec) -> None:
    """Refuse, before sampling, conds whose widths the refiner UNet would fail on mid-loop."""
    context = _required(cond, TEXT_CONTEXT_KEY)
    vector = _required(cond, VECTOR_KEY)
    if context.shape[-1] != spec.context_dim:
        raise ConditioningError(
            f"text context: width {context.shape[-1]} does not match the refiner UNet's context dim "
            f"{spec.context_dim}. The refiner does not belong to this base model; choose a refiner made for it."
        )
    if vector.ndim != 2 or vector.shape[1] != spec.adm_in_channels:
        raise ConditioningError(
            f"vector: shape {tuple(vector.shape)} does not match the refiner UNet's ADM input width "
            f"{spec.adm_in_channels}. The refiner does not belong to this base model; choose a refiner made for it."
        )
    if vector.shape[0] != context.shape[0]:
        raise ConditioningError(
            f"conds: the vector has {vector.shape[0]} rows and the text context {context.shape[0]}; "
            "they must have one row per prompt. This is a bug in the caller; please report it.",
            Cause.INTERNAL,
        )


def text_encoders_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """True when two text-encoder state dicts hold the same tensors, so slicing the base's conds is exact.

    Cheap in the usual cases: the same dict, or tensors sharing storage, are equal without
    reading them; keys are compared first, then one pair of tensors at a time (shape and dtype
    before data), so a lazy mapping over two files never holds more than one pair in memory and
    stops at the first difference.
    """
    if a is b:
        return True
    if a.keys() != b.keys():
        return False
    return all(_same_tensor(a[key], b[key]) for key in a)


def _same_tensor(x: torch.Tensor, y: torch.Tensor) -> bool:
    if x is y:
        return True
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.is_meta or y.is_meta:
        return False
    if x.device == y.device and x.data_ptr() == y.data_ptr() and x.stride() == y.stride():
        return True
    return torch.equal(x, y.to(x.device))


def _required(cond: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in cond:
        raise ConditioningError(
            f"conds: no {key!r} entry (keys given: {sorted(cond)}). The refiner needs SDXL conditioning "
            "with 'crossattn' and 'vector'; use an SDXL base model.",
            Cause.CONFLICT,
        )
    return cond[key]
