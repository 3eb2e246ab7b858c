"""A UNet's constructor arguments: what its weights determine, and what only a config says.

A checkpoint's tensors fix the UNet's widths and depths, but not its attention head width (or
head count), ``legacy``, the attention type and a few more: those live only in the config that the
host builds the model from. A UNet built with another head width than the one its weights were
trained with runs without any error and computes something else, so the refiner's UNet is built
from the config the host would use for that file, checked against the weights; only a file that
no config describes is built from its shapes and the SDXL family's conventions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sdxl_refiner.core.errors import CheckpointError

# Head width is not stored in the weights; every released SDXL-family config uses 64.
SDXL_HEAD_CHANNELS = 64
DEFAULT_REMEDY = "correct the config, or choose another checkpoint"


@dataclass(frozen=True)
class UNetConfig:
    """An SDXL-family UNet's architecture, as far as the weights determine it.

    Per-level tuples have one entry per ``channel_mult`` level; ``transformer_depth`` is 0 at levels
    without attention. ``num_head_channels`` is not in the weights: here it is the family's
    convention, used only for a file that no config describes (see ``unet_constructor_params``).
    """

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    transformer_depth_middle: int
    context_dim: int
    adm_in_channels: int | None
    num_head_channels: int = SDXL_HEAD_CHANNELS
    use_linear_in_transformer: bool = True

    @property
    def attention_levels(self) -> tuple[int, ...]:
        return tuple(level for level, depth in enumerate(self.transformer_depth) if depth)

    @property
    def attention_resolutions(self) -> tuple[int, ...]:
        return tuple(2**level for level in self.attention_levels)

    def as_sgm_params(self) -> dict:
        """The ``network_config.params`` that make sgm's ``UNetModel`` build this very layout."""
        res_blocks = set(self.num_res_blocks)
        params: dict = {}
        if self.adm_in_channels is not None:
            params["adm_in_channels"] = self.adm_in_channels
            params["num_classes"] = "sequential"
        params.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            model_channels=self.model_channels,
            attention_resolutions=sorted(self.attention_resolutions, reverse=True),
            num_res_blocks=res_blocks.pop() if len(res_blocks) == 1 else list(self.num_res_blocks),
            channel_mult=list(self.channel_mult),
            num_head_channels=self.num_head_channels,
            use_spatial_transformer=True,
            use_linear_in_transformer=self.use_linear_in_transformer,
            transformer_depth=list(self.transformer_depth),
            transformer_depth_middle=self.transformer_depth_middle,
            context_dim=self.context_dim,
            legacy=False,
        )
        return params





def _unet_error(problem: str) -> CheckpointError:
    return CheckpointError(f"The UNet does not have the SDXL layout: {problem}.")


def _shape(shapes: Mapping[str, Sequence[int]], key: str) -> tuple[int, ...]:
    try:
        return tuple(shapes[key])
    except KeyError:
        raise _unet_error(f"tensor {key!r} is missing") from None


def _transformer_depth(shapes: Mapping[str, Sequence[int]], block: str) -> int:
    depth = 0
    while f"{block}.transformer_blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    return depth


def infer_unet_config(
    shapes: Mapping[str, Sequence[int]], *, num_head_channels: int = SDXL_HEAD_CHANNELS
) -> UNetConfig:
    """Reads the architecture from tensor shapes (keys without ``model.diffusion_model.``).

    Widths come from the model itself, never from constants, so fine-tunes and small test
    models are handled like the released ones.
    """
    model_channels, in_channels = _shape(shapes, "input_blocks.0.0.weight")[:2]
    out_channels = _shape(shapes, "out.2.weight")[0]
    adm_in_channels = shapes["label_emb.0.0.weight"][1] if "label_emb.0.0.weight" in shapes else None
    if "label_emb.weight" in shapes:
        raise _unet_error("class-label embeddings (label_emb.weight) are not an SDXL ADM input")

    channel_mult: list[int] = []
    num_res_blocks: list[int] = []
    depths: list[int] = []
    context_dims: set[int] = set()
    linear: set[bool] = set()
    level_blocks = 0
    level_depths: set[int] = set()
    index = 1

    def close_level(out_ch: int) -> None:
        if out_ch % model_channels:
            raise _unet_error(
                f"{out_ch} channels at level {len(channel_mult)} is not a multiple of {model_channels}"
            )
        if len(level_depths) > 1:
            raise _unet_error(
                f"level {len(channel_mult)} mixes transformer depths {sorted(level_depths)} (0: no attention)"
            )
        channel_mult.append(out_ch // model_channels)
        num_res_blocks.append(level_blocks)
        depths.append(level_depths.pop() if level_depths else 0)

    def note_transformer(block: str) -> int:
        depth = _transformer_depth(shapes, block)
        if depth == 0:
            raise _unet_error(f"{block} has a projection but no transformer blocks")
        context_dims.add(_shape(shapes, f"{block}.transformer_blocks.0.attn2.to_k.weight")[1])
        linear.add(len(_shape(shapes, f"{block}.proj_in.weight")) == 2)
        return depth

    out_ch = model_channels
    while True:
        block = f"input_blocks.{index}"
        if f"{block}.0.op.weight" in shapes:
            close_level(out_ch)
            level_blocks = 0
        elif f"{block}.0.in_layers.2.weight" in shapes:
            out_ch = _shape(shapes, f"{block}.0.in_layers.2.weight")[0]
            level_blocks += 1
            level_depths.add(note_transformer(f"{block}.1") if f"{block}.1.proj_in.weight" in shapes else 0)
        else:
            break
        index += 1
    if level_blocks == 0:
        raise _unet_error("no residual blocks after the last downsampling (input_blocks)")
    close_level(out_ch)
    if "middle_block.1.proj_in.weight" not in shapes:
        raise _unet_error("the middle block has no spatial transformer (middle_block.1)")
    depth_middle = note_transformer("middle_block.1")
    expected_outputs = sum(n + 1 for n in num_res_blocks)
    if f"output_blocks.{expected_outputs - 1}.0.in_layers.2.weight" not in shapes or (
        f"output_blocks.{expected_outputs}.0.in_layers.2.weight" in shapes
    ):
        raise _unet_error(f"expected {expected_outputs} output blocks for {len(num_res_blocks)} levels")
    for index in range(expected_outputs):
        block = f"output_blocks.{index}.1"
        if f"{block}.proj_in.weight" in shapes:
            note_transformer(block)
    if len(context_dims) != 1:
        raise _unet_error(f"transformers disagree on the context width: {sorted(context_dims)}")
    if len(linear) != 1:
        raise _unet_error("some transformers project with linear layers and some with convolutions")
    return UNetConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(num_res_blocks),
        transformer_depth=tuple(depths),
        transformer_depth_middle=depth_middle,
        context_dim=context_dims.pop(),
        adm_in_channels=adm_in_channels,
        num_head_channels=num_head_channels,
        use_linear_in_transformer=linear.pop(),
    )


@dataclass(frozen=True)
class HostUNetConfig:
    """The UNet constructor arguments a host builds a file's model with (its config's
    ``network_config.params``); ``source`` names the config and ``remedy`` says what to do when it
    does not fit the file, both in the host's terms.

    Kept as canonical JSON so that it is hashable and compares by value: the refiner cache keys on
    it, and an edited config is a different UNet.
    """

    source: str
    params_json: str
    remedy: str = DEFAULT_REMEDY

    @classmethod
    def from_params(cls, source: str, params: Mapping[str, object], remedy: str | None = None) -> HostUNetConfig:
        try:
            return cls(source, json.dumps(dict(params), sort_keys=True), remedy or DEFAULT_REMEDY)
        except TypeError as error:
            raise CheckpointError(
                f"The UNet config {source} holds a value that is not plain data ({error}); correct it."
            ) from error

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)


def unet_constructor_params(inferred: UNetConfig, host: HostUNetConfig | None, checkpoint: str) -> dict:
    """The arguments to build the UNet of ``checkpoint`` with: the host's config when it has one,
    after checking it against what the weights say, else the shapes' config.

    A contradiction is refused rather than resolved either way: built from the config, the file's
    tensors would not fit; built from the shapes, the parameters only the config holds would be
    guessed, which is the silent failure this function exists to prevent.
    """
    if host is None:
        return inferred.as_sgm_params()
    params = host.params
    problems = _contradictions(inferred, params)
    if problems:
        raise CheckpointError(
            f"Refiner checkpoint {checkpoint!r} does not fit the config it is built from, {host.source}: "
            f"{'; '.join(problems)}. To fix it: {host.remedy}."
        )
    return params


def _per_level(value: object, levels: int) -> list:
    return [value] * levels if isinstance(value, int) else list(value)  # type: ignore[arg-type]


def _config_view(params: Mapping[str, object]) -> dict[str, object]:
    """The fields the weights also determine, as sgm's ``UNetModel`` derives them from its arguments;
    a KeyError names a field every SDXL UNet config sets."""
    channel_mult = [int(mult) for mult in params["channel_mult"]]  # type: ignore[union-attr]
    levels = len(channel_mult)
    attention = {int(ds) for ds in params["attention_resolutions"]}  # type: ignore[union-attr]
    depths = _per_level(params.get("transformer_depth", 1), levels)
    context = params.get("context_dim")
    middle = params.get("transformer_depth_middle")
    contexts = sorted(set(context)) if isinstance(context, list) else [context]
    view: dict[str, object] = {
        "in_channels": params["in_channels"],
        "out_channels": params["out_channels"],
        "model_channels": params["model_channels"],
        "channel_mult": channel_mult,
        "num_res_blocks": _per_level(params["num_res_blocks"], levels),
        "transformer_depth_middle": depths[-1] if middle is None else middle,
        "context_dim": contexts[0] if len(contexts) == 1 else contexts,
        "adm_in_channels": params.get("adm_in_channels") if params.get("num_classes") == "sequential" else None,
        "use_linear_in_transformer": bool(params.get("use_linear_in_transformer", False)),
        "use_spatial_transformer": bool(params.get("use_spatial_transformer", False)),
    }
    if params.get("num_attention_blocks") is None:
        view["transformer_depth"] = [depths[level] if 2**level in attention else 0 for level in range(levels)]
    return view


def _weights_view(config: UNetConfig) -> dict[str, object]:
    return {
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "model_channels": config.model_channels,
        "channel_mult": list(config.channel_mult),
        "num_res_blocks": list(config.num_res_blocks),
        "transformer_depth_middle": config.transformer_depth_middle,
        "context_dim": config.context_dim,
        "adm_in_channels": config.adm_in_channels,
        "use_linear_in_transformer": config.use_linear_in_transformer,
        "use_spatial_transformer": True,
        "transformer_depth": list(config.transformer_depth),
    }


def _contradictions(inferred: UNetConfig, params: Mapping[str, object]) -> list[str]:
    try:
        configured = _config_view(params)
    except KeyError as missing:
        return [f"it does not set {missing.args[0]}, which every SDXL UNet config sets"]
    except (TypeError, ValueError) as error:
        return [f"it is not an SDXL UNet config ({error})"]
    weights = _weights_view(inferred)
    problems = [
        f"{name} is {configured[name]} in the config and {weights[name]} in the weights"
        for name in weights
        if name in configured and configured[name] != weights[name]
    ]
    if problems:
        return problems
    return _head_problems(inferred, params)


def _head_problems(inferred: UNetConfig, params: Mapping[str, object]) -> list[str]:
    """Each transformer's heads × head width must be its channel count, the width of its weights;
    sgm derives both from ``num_head_channels`` (or ``num_heads``) and ``legacy``."""
    head_channels = int(params.get("num_head_channels", -1))  # type: ignore[arg-type]
    heads = int(params.get("num_heads", -1))  # type: ignore[arg-type]
    if head_channels == -1 and heads == -1:
        return ["it sets neither num_head_channels nor num_heads"]
    widths = [inferred.model_channels * inferred.channel_mult[level] for level in inferred.attention_levels]
    widths.append(inferred.model_channels * inferred.channel_mult[-1])
    for channels in sorted(set(widths)):
        count, width = (channels // head_channels, head_channels) if head_channels != -1 else (heads, channels // heads)
        if params.get("legacy", True) and count:
            width = channels // count
        if count < 1 or count * width != channels:
            setting = f"num_head_channels {head_channels}" if head_channels != -1 else f"num_heads {heads}"
            return [f"{setting} does not split the {channels} channels of its transformers into whole heads"]
    return []
