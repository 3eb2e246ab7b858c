"""Which file the refiner is, whether it can refine this base, and whether its text encoder is the base's.

API callers name a checkpoint; only names in the host's checkpoint list are accepted, so no
request reaches an arbitrary path. Every host of the family keeps the WebUI's ``sd_models`` list
and ``CheckpointInfo``. The file is classified once per generation here; the result (with its
parsed header) is handed on to the binding that loads the UNet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sdxl_refiner.core.checkpoint import CheckpointInfo, classify_checkpoint
from sdxl_refiner.core.conditioning import RefinerCondSpec
from sdxl_refiner.core.errors import Cause, CheckpointError, RefinerError


@dataclass(frozen=True)
class ChosenRefiner:
    """The refiner of one generation: the host's entry in its checkpoint list (``host_info``: title,
    name, hash) and the file's classification, header included."""

    host_info: Any
    info: CheckpointInfo

    @property
    def path(self) -> str:
        return str(self.host_info.filename)

    @property
    def title(self) -> str:
        return self.host_info.title


def resolve_checkpoint(name: str):
    """The WebUI's CheckpointInfo for a name, title or hash from the checkpoint list."""
    from modules import sd_models

    if not name or name in ("None", "none"):
        raise CheckpointError(
            f"SDXL Refiner is enabled but no refiner checkpoint is chosen (checkpoint: {name!r}). "
            "Pick one in the SDXL Refiner panel, or pass a checkpoint title from GET /sdapi/v1/sd-models.",
            Cause.INVALID_ARGUMENT,
        )
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        raise CheckpointError(
            f"SDXL Refiner checkpoint {name!r} is not in the WebUI's checkpoint list. Give a title as the "
            "Checkpoint dropdown shows it, or a checkpoint's name: its file name, its 'model_name' or its hash "
            "(GET /sdapi/v1/sd-models lists each checkpoint's 'title' and 'model_name'); put the file in "
            "models/Stable-diffusion and refresh the list if it is new.",
            Cause.NOT_FOUND,
        )
    return info


def classify_refiner(host_info) -> ChosenRefiner:
    info = classify_checkpoint(host_info.filename)
    if not info.usable_as_refiner:
        raise CheckpointError(f"SDXL Refiner checkpoint {host_info.title!r}{_why_refused(info)}.")
    return ChosenRefiner(host_info, info)


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
    renamed = type(error)(message, error.cause)
    renamed.__cause__ = error
    return renamed


def require_sdxl_base(sd_model) -> None:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    title = getattr(info, "title", "the loaded model")
    if getattr(sd_model, "is_sdxl_inpaint", False):
        raise CheckpointError(
            f"SDXL Refiner cannot follow the loaded model {title!r}: it is an SDXL inpainting model, whose UNet "
            "takes the mask and masked image with the latent, and a refiner takes the latent alone. Load an SDXL "
            "base checkpoint for the refiner, or turn SDXL Refiner off for inpainting models.",
            Cause.CONFLICT,
        )
    if getattr(sd_model, "is_sdxl", False):
        return
    raise CheckpointError(
        f"SDXL Refiner needs an SDXL base model, but the loaded model {title!r} is not SDXL: an SDXL refiner "
        "cannot continue its latent. Load an SDXL base checkpoint, or turn SDXL Refiner off.",
        Cause.CONFLICT,
    )


def cond_spec(info: CheckpointInfo, scalar_embed_dim: int) -> RefinerCondSpec:
    """What the refiner UNet takes, from its classified shapes; ``scalar_embed_dim`` is the host's
    width of one embedded size or score scalar."""
    config = info.unet_config
    kind = "refiner" if info.is_refiner_type else "base"
    return RefinerCondSpec(kind, config.context_dim, config.adm_in_channels or 0, scalar_embed_dim)
