"""The refiner's UNet as WebUI 1.10 builds UNets: from its config, with sgm's class, where the
residency says, through the process's cache (loaded in the background while the base samples)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sdxl_refiner.bindings.webui import model_config
from sdxl_refiner.core.checkpoint import CheckpointInfo, load_unet
from sdxl_refiner.core.errors import ConditioningError
from sdxl_refiner.core.file_digest import FileDigest
from sdxl_refiner.core.residency import PendingRefiner, StoragePlan, choose_residency, storage_plan_for
from sdxl_refiner.core.unet_config import HostUNetConfig, unet_constructor_params
from sdxl_refiner.host import options
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.resources import resources


@dataclass
class WebUIRefiner:
    """The binding's handle on one generation's refiner: the config it is built from, where it is
    kept, and its load (under way or done)."""

    host_config: HostUNetConfig | None
    storage: StoragePlan | None = None
    pending: PendingRefiner | None = None


def scalar_embed_dim(sd_model, info: CheckpointInfo) -> int:
    """Width of one embedded scalar: the base conditioner's own embedders say it; a refiner UNet's
    ADM input (pooled text, as wide as its context, plus five scalars) confirms it."""
    for embedder in getattr(sd_model.conditioner, "embedders", []):
        outdim = getattr(embedder, "outdim", None)
        if isinstance(outdim, int) and outdim > 0:
            return outdim
    config = info.unet_config
    width = (config.adm_in_channels or 0) - config.context_dim
    if width <= 0 or width % 5:
        raise ConditioningError(
            f"refiner UNet: ADM input width {config.adm_in_channels} and context {config.context_dim} do not "
            "describe an SDXL refiner. Choose an SDXL refiner checkpoint."
        )
    return width // 5


def storage_plan(refiner_bytes: int) -> StoragePlan:
    from modules import devices, shared

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
    chosen = storage_plan_for(residency, device)
    if getattr(shared.sd_model, "lowvram", False):
        # The WebUI's low-VRAM hooks move modules in and out; the refiner waits in RAM like the base.
        return StoragePlan("cpu", str(device), pin_memory=chosen.pin_memory, prefetch=False)
    return chosen


def build_unet(params: dict) -> torch.nn.Module:
    """The class the WebUI itself builds SDXL UNets with, so its attention optimisations apply."""
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**params)


def unet_config_for(chosen: ChosenRefiner) -> HostUNetConfig | None:
    """The config the WebUI builds this checkpoint with, checked against its weights now, so that a
    contradiction is refused before any step runs."""
    host = model_config.host_unet_config(chosen.host_info, chosen.info)
    unet_constructor_params(chosen.info.unet_config, host, chosen.path)
    return host


def start_loading(
    chosen: ChosenRefiner, where: StoragePlan, host_config: HostUNetConfig | None, digest: FileDigest | None = None
) -> PendingRefiner:
    """The classified checkpoint is handed to the load, so its header is not read again; the load
    hashes the file on the way when ``digest`` asks for it (a UNet kept from before is not read)."""
    from modules import devices

    dtype = devices.dtype_unet
    load = functools.partial(
        _load, chosen.info, dtype=dtype, device=where.storage_device, pin_memory=where.pin_memory,
        host_config=host_config, digest=digest,
    )
    variant = (dtype, str(torch.device(where.storage_device)), where.pin_memory, host_config)
    return resources().cache.start_loading(chosen.path, load, variant, pinned=where.pin_memory)


def _load(info: CheckpointInfo, _path, **options) -> torch.nn.Module:
    return load_unet(info, build_unet, **options)
