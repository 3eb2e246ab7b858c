"""Which file the refiner is, whether it can refine this base, and its UNet from the process cache.

API callers name a checkpoint; only names in the WebUI's checkpoint list are accepted, so no
request reaches an arbitrary path. Everything that can be refused is refused here, before any
step runs. The cache lives on the WebUI's model holder (``sd_models.model_data``) so it is one
per process and goes away with the WebUI, without a module global of ours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from sdxl_refiner.checkpoint import CheckpointInfo, CheckpointKind, classify_checkpoint
from sdxl_refiner.conditioning import RefinerCondSpec, text_encoders_identical
from sdxl_refiner.errors import CheckpointError, ConditioningError, RefinerError
from sdxl_refiner.residency import (
    Placement,
    RefinerCache,
    choose_residency,
    file_identity,
    placement_for,
)
from sdxl_refiner.unet_config import HostUNetConfig, UNetConfig, unet_constructor_params
from sdxl_refiner.webui import model_config

RESOURCES_ATTRIBUTE = "sdxl_refiner_resources"
BASE_ENCODER_PREFIXES = ("conditioner.embedders.0.", "conditioner.embedders.1.")
# The second text encoder (OpenCLIP ViT-bigG) is the base's embedder 1 and the refiner's embedder 0.
BASE_BIGG_PREFIX = "conditioner.embedders.1.model."
REFINER_BIGG_PREFIX = "conditioner.embedders.0.model."


@dataclass
class RefinerResources:
    """Process-wide: the refiner UNet cache and the text-encoder comparisons already made."""

    cache: RefinerCache
    encoder_checks: dict[tuple, bool] = field(default_factory=dict)
    own_encoders: dict = field(default_factory=dict)


def resources() -> RefinerResources:
    from modules import sd_models

    from sdxl_refiner.webui import options

    holder = sd_models.model_data
    found = getattr(holder, RESOURCES_ATTRIBUTE, None)
    if found is None:
        found = RefinerResources(RefinerCache(options.cache_capacity()))
        setattr(holder, RESOURCES_ATTRIBUTE, found)
    else:
        found.cache.capacity = options.cache_capacity()
    return found


def resolve_checkpoint(name: str):
    """The WebUI's CheckpointInfo for a name, title or hash from the checkpoint list."""
    from modules import sd_models

    if not name or name in ("None", "none"):
        raise CheckpointError(
            f"SDXL Refiner is enabled but no refiner checkpoint is chosen (checkpoint: {name!r}). "
            "Pick one in the SDXL Refiner panel, or pass a checkpoint title from GET /sdapi/v1/sd-models."
        )
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        raise CheckpointError(
            f"SDXL Refiner checkpoint {name!r} is not in the WebUI's checkpoint list. Allowed are the titles "
            "the Checkpoint dropdown shows (GET /sdapi/v1/sd-models lists them as 'title'); put the file in "
            "models/Stable-diffusion and refresh the list if it is new."
        )
    return info


def classify_refiner(webui_info) -> CheckpointInfo:
    info = classify_checkpoint(webui_info.filename)
    if not info.usable_as_refiner:
        raise CheckpointError(f"SDXL Refiner checkpoint {webui_info.title!r}{_why_refused(info)}.")
    return info


def _why_refused(info: CheckpointInfo) -> str:
    """The core's reason begins with the file's name, which the message gives once, as the list's title."""
    name = info.path.name
    reason = info.reason or f"{name} cannot refine SDXL"
    reason = reason[len(name):] if reason.startswith(name) else f": {reason}"
    if "choose an sdxl" not in reason.lower():
        reason += "; choose an SDXL refiner or base-type checkpoint"
    return reason


def with_checkpoint_names(error: RefinerError, checkpoints) -> RefinerError:
    """The error as API callers and the UI should see it: each checkpoint file named as the WebUI's
    checkpoint list names it, never by its path on the server (the core's messages hold paths)."""
    from modules import sd_models

    renames: dict[str, str] = {}
    model_dir = str(sd_models.model_path)
    for folder in {model_dir, os.path.abspath(model_dir), os.path.realpath(model_dir)}:
        renames[folder.rstrip(os.sep) + os.sep] = ""
    for checkpoint in checkpoints:
        if checkpoint is None:
            continue
        filename = str(checkpoint.filename)
        for form in {filename, os.path.abspath(filename), os.path.realpath(filename)}:
            renames[form] = checkpoint.name
    message = str(error)
    for path in sorted(renames, key=len, reverse=True):
        message = message.replace(path, renames[path])
    if message == str(error):
        return error
    renamed = type(error)(message)
    renamed.__cause__ = error
    return renamed


def hashed_short_title(webui_info) -> str:
    """``name [hash]`` as "Model hash" has it: the WebUI hashes a checkpoint only when it loads one,
    so a refiner never loaded as a model has no hash yet; computing it once (the WebUI caches it)
    lets the infotext name the exact file, as loading does: read from the WebUI's hash cache while
    the file is unchanged, computed otherwise. With --no-hashing the name stands alone."""
    webui_info.calculate_shorthash()
    return webui_info.short_title


def require_sdxl_base(sd_model) -> None:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    title = getattr(info, "title", "the loaded model")
    if getattr(sd_model, "is_sdxl_inpaint", False):
        raise CheckpointError(
            f"SDXL Refiner cannot follow the loaded model {title!r}: it is an SDXL inpainting model, whose UNet "
            "takes the mask and masked image with the latent, and a refiner takes the latent alone. Load an SDXL "
            "base checkpoint for the refiner, or turn SDXL Refiner off for inpainting models."
        )
    if getattr(sd_model, "is_sdxl", False):
        return
    raise CheckpointError(
        f"SDXL Refiner needs an SDXL base model, but the loaded model {title!r} is not SDXL: an SDXL refiner "
        "cannot continue its latent. Load an SDXL base checkpoint, or turn SDXL Refiner off."
    )


def scalar_embed_dim(sd_model, config: UNetConfig) -> int:
    """Width of one embedded scalar: the base conditioner's own embedders say it; a refiner UNet's
    ADM input (pooled text, as wide as its context, plus five scalars) confirms it."""
    for embedder in getattr(sd_model.conditioner, "embedders", []):
        outdim = getattr(embedder, "outdim", None)
        if isinstance(outdim, int) and outdim > 0:
            return outdim
    width = (config.adm_in_channels or 0) - config.context_dim
    if width <= 0 or width % 5:
        raise ConditioningError(
            f"refiner UNet: ADM input width {config.adm_in_channels} and context {config.context_dim} do not "
            "describe an SDXL refiner. Choose an SDXL refiner checkpoint."
        )
    return width // 5


def cond_spec(sd_model, info: CheckpointInfo) -> RefinerCondSpec:
    config = info.unet_config
    kind = "refiner" if info.kind is CheckpointKind.SDXL_REFINER else "base"
    return RefinerCondSpec(kind, config.context_dim, config.adm_in_channels or 0, scalar_embed_dim(sd_model, config))


class _TextEncoderTensors(Mapping):
    """A safetensors file's text-encoder tensors, keys relative to each prefix (tagged by its index),
    read one at a time when asked for: two encoders of a real pair are gigabytes."""

    def __init__(self, file, prefixes: tuple[str, ...]):
        self._file = file
        self._keys = {
            f"{index}:{key[len(prefix):]}": key
            for key in file.keys()  # noqa: SIM118 - safe_open is not iterable
            for index, prefix in enumerate(prefixes)
            if key.startswith(prefix)
        }

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(self._keys[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _encoders_identical(base_path: str, base_prefixes, refiner_path: str, refiner_prefixes) -> bool:
    if any(Path(path).suffix.lower() != ".safetensors" for path in (base_path, refiner_path)):
        return False
    with safe_open(base_path, framework="pt") as base_file, safe_open(refiner_path, framework="pt") as refiner_file:
        base = _TextEncoderTensors(base_file, base_prefixes)
        refiner = _TextEncoderTensors(refiner_file, refiner_prefixes)
        return len(base) > 0 and len(refiner) > 0 and text_encoders_identical(base, refiner)


def text_encoders_match(base_path: str, refiner_path: str, kind: str, checks: dict[tuple, bool]) -> bool:
    """Slicing the base's conds is exact only when the refiner's text encoder is the base's.

    A refiner-type file must hold the base's second encoder; a base-type one both encoders.
    Compared once per pair of files (as they are now on disk), then remembered.
    """
    key = (file_identity(base_path), file_identity(refiner_path), kind)
    if key not in checks:
        base_prefixes = (BASE_BIGG_PREFIX,) if kind == "refiner" else BASE_ENCODER_PREFIXES
        refiner_prefixes = (REFINER_BIGG_PREFIX,) if kind == "refiner" else BASE_ENCODER_PREFIXES
        checks[key] = _encoders_identical(base_path, base_prefixes, refiner_path, refiner_prefixes)
    return checks[key]


def text_encoder_refused(base_name: str, refiner_name: str, why: str) -> ConditioningError:
    return ConditioningError(
        f"SDXL Refiner checkpoint {refiner_name!r}: its text encoder is not the one of the base "
        f"{base_name!r}, and {why}. Use the refiner released with this base (the SDXL 1.0 base and refiner "
        "share their text encoder), or a refiner-type checkpoint in .safetensors whose OpenCLIP encoder has "
        "the base's architecture."
    )


def placement(refiner_bytes: int) -> Placement:
    from modules import devices, shared

    from sdxl_refiner.webui import options

    device = torch.device(devices.device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    free = torch.cuda.mem_get_info(device)[0] if cuda else None
    cmd = shared.cmd_opts
    residency = choose_residency(
        options.residency_policy(),
        cuda=cuda,
        free_bytes=free,
        refiner_bytes=refiner_bytes,
        host_lowvram=bool(getattr(cmd, "lowvram", False)),
        host_medvram=bool(getattr(cmd, "medvram", False) or getattr(cmd, "medvram_sdxl", False)),
    )
    chosen = placement_for(residency, device)
    if getattr(shared.sd_model, "lowvram", False):
        # The WebUI's low-VRAM hooks move modules in and out; the refiner waits in RAM like the base.
        return Placement("cpu", str(device), pin_memory=chosen.pin_memory, prefetch=False)
    return chosen


def build_unet(params: dict) -> torch.nn.Module:
    """The class the WebUI itself builds SDXL UNets with, so its attention optimisations apply."""
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**params)


def unet_config_for(webui_info, info: CheckpointInfo) -> HostUNetConfig | None:
    """The config the WebUI builds this checkpoint with, checked against its weights now, so that a
    contradiction is refused before any step runs."""
    host = model_config.host_unet_config(webui_info, info)
    unet_constructor_params(info.unet_config, host, str(webui_info.filename))
    return host


def start_loading(path: str, where: Placement, host_config: HostUNetConfig | None):
    from modules import devices

    return resources().cache.start_loading(
        path,
        build_unet,
        devices.dtype_unet,
        where.storage_device,
        pin_memory=where.pin_memory,
        host_config=host_config,
    )
