"""A UNet whose state-dict keys and shapes equal generative-models' (sgm) ``UNetModel``.

The WebUI builds SDXL UNets with sgm's class, which cannot be installed here. Tests, the WebUI
stand-in and the benchmarks need a module that loads exactly the tensors a real SDXL checkpoint
holds and runs ``forward(x, timesteps, context, y)`` the way sgm does, so this is written from the
layout of the released models (proved against ``tests/fixtures/unet_sdxl_*.json``).

Only the parts SDXL uses are supported: spatial transformers (GEGLU feed-forward, no
scale-shift norm), convolutional resampling, ``num_classes="sequential"`` for the ADM vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

GROUPS = 32


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """sgm's sinusoidal embedding: ``cat(cos(t·f), sin(t·f))`` with ``f_k = exp(-ln(max_period)·k/half)``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """Normalises in float32 whatever the weights' dtype, as sgm does, so fp16 stays stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    return GroupNorm32(GROUPS, channels, eps=eps)


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class CrossAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        batch = x.shape[0]
        q, k, v = (
            t.reshape(batch, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, q.shape[1] * q.shape[-1]))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, use_linear: bool
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = group_norm(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to ResBlocks and the context to transformers."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


# sgm options whose other values change the computation; only their defaults are implemented.
UNSUPPORTED_OPTIONS = {
    "disable_self_attentions": None,
    "num_attention_blocks": None,
    "disable_middle_self_attn": False,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "conv_resample": True,
    "dims": 2,
    "use_new_attention_order": False,
    "n_embed": None,
}


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    return [value] * levels if isinstance(value, int) else list(value)


def _heads(channels: int, num_heads: int, num_head_channels: int, legacy: bool) -> tuple[int, int]:
    """Heads and head width of a transformer, derived as sgm's ``UNetModel`` derives them."""
    if num_head_channels == -1:
        heads, dim_head = num_heads, channels // num_heads
    else:
        heads, dim_head = channels // num_head_channels, num_head_channels
    if legacy:
        dim_head = channels // heads
    return heads, dim_head


class SgmUNet(nn.Module):
    """Takes the ``network_config.params`` of sgm's yaml files, with sgm's defaults; runtime-only
    keys are ignored, and options that change the computation but are not implemented are refused."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        model_channels: int,
        num_res_blocks: int | Sequence[int],
        attention_resolutions: Sequence[int],
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_heads: int = -1,
        num_head_channels: int = -1,
        transformer_depth: int | Sequence[int] = 1,
        transformer_depth_middle: int | None = None,
        context_dim: int | Sequence[int] | None = None,
        adm_in_channels: int | None = None,
        num_classes: str | None = None,
        use_linear_in_transformer: bool = False,
        use_spatial_transformer: bool = False,
        legacy: bool = True,
        **runtime_only: object,
    ):
        super().__init__()
        unsupported = {
            key: value
            for key, value in runtime_only.items()
            if key in UNSUPPORTED_OPTIONS and value != UNSUPPORTED_OPTIONS[key]
        }
        if not use_spatial_transformer or unsupported:
            raise ValueError(f"only SDXL-style UNets (use_spatial_transformer) are supported, not {unsupported}")
        if num_heads == -1 and num_head_channels == -1:
            raise ValueError("Either num_heads or num_head_channels has to be set")
        if num_classes not in (None, "sequential"):
            raise ValueError(f"num_classes={num_classes!r}: only None or 'sequential' is supported")
        levels = len(channel_mult)
        depths = _per_level(transformer_depth, levels)
        middle_depth = depths[-1] if transformer_depth_middle is None else transformer_depth_middle
        if isinstance(context_dim, Sequence):
            if len(set(context_dim)) != 1:
                raise ValueError(f"context_dim={context_dim!r}: one width for every transformer is supported")
            context_dim = context_dim[0]
        res_blocks = _per_level(num_res_blocks, levels)
        self.model_channels = model_channels
        self.num_classes = num_classes
        time_dim = model_channels * 4

        def transformer(ch: int, depth: int) -> SpatialTransformer:
            heads, dim_head = _heads(ch, num_heads, num_head_channels, legacy)
            return SpatialTransformer(ch, heads, dim_head, depth, context_dim, use_linear_in_transformer)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        if num_classes == "sequential":
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(adm_in_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            )

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))]
        )
        skip_channels = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, time_dim, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch, depths[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_dim), transformer(ch, middle_depth), ResBlock(ch, time_dim)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_channels.pop(), time_dim, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch, depths[level]))
                if level and i == res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
        )

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("y must be given if and only if the model is class-conditional (has label_emb)")
        weight_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(weight_dtype))
        if y is not None:
            emb = emb + self.label_emb(y.to(weight_dtype))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


def heads_of(unet: nn.Module) -> set[tuple[int, int]]:
    """(heads, head width) of every attention layer: what a config sets and the weights do not show."""
    return {
        (module.heads, module.to_q.out_features // module.heads)
        for name, module in unet.named_modules()
        if name.endswith(("attn1", "attn2"))
    }
