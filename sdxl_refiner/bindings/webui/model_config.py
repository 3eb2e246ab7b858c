"""The config the WebUI builds a checkpoint's model from, as the refiner UNet's constructor arguments.

WebUI 1.10 builds every checkpoint from a config: the ``.yaml`` of the same name beside the file
when there is one, else its own config for the detected type (generative-models'
``configs/inference/sd_xl_base.yaml`` or ``sd_xl_refiner.yaml``). The head width and the other
UNet parameters that the weights do not carry come only from there, so the refiner's UNet is
built from that same config, with the parameters the WebUI changes for inference changed alike.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from sdxl_refiner.core.checkpoint import CheckpointInfo, CheckpointKind
from sdxl_refiner.core.errors import CheckpointError
from sdxl_refiner.core.unet_config import HostUNetConfig

# What the WebUI's ``sd_models.repair_config`` sets on every network config before building it.
INFERENCE_OVERRIDES = {"use_checkpoint": False}
# The WebUI's config for each kind (an attribute of ``sd_models_config``), and the model it describes.
TYPE_CONFIGS = {
    CheckpointKind.SDXL_REFINER: ("config_sdxl_refiner", "refiner"),
    CheckpointKind.SDXL_BASE: ("config_sdxl", "base"),
}


class ConfigFile(NamedTuple):
    """A config file, its name in messages (as the checkpoint list names files) and the fix for a
    config that does not describe the checkpoint."""

    path: str
    source: str
    remedy: str


def _type_config(info: CheckpointInfo) -> ConfigFile | None:
    """The WebUI's own config for the file's type (a usable refiner is SDXL refiner or base type),
    its name and the fix; only for a kind the WebUI itself reads from the text encoder's keys (a
    UNet-only file gets the SD 1.x default there)."""
    from modules import sd_models_config

    if not info.kind_from_text_encoder:
        return None
    attribute, released = TYPE_CONFIGS[info.kind]
    path = getattr(sd_models_config, attribute, None)
    if not path or not os.path.isfile(path):
        return None
    name = os.path.basename(path)
    remedy = (
        f"this is not a released SDXL {released}, so put a .yaml of its own name that "
        "describes it beside the checkpoint (the WebUI builds the file from that), or choose another checkpoint"
    )
    return ConfigFile(path, f"the WebUI's {name}", remedy)


def config_file_of(webui_info, info: CheckpointInfo) -> ConfigFile | None:
    """The config file the WebUI would build this checkpoint with, or ``None`` when it has none
    that fits (the UNet is then built from the file's shapes)."""
    from modules import sd_models_config

    beside = sd_models_config.find_checkpoint_config_near_filename(webui_info)
    if beside is not None:
        remedy = (
            f"correct {beside} (the WebUI builds the checkpoint from it too), or remove it when the checkpoint is "
            "a released SDXL model"
        )
        return ConfigFile(beside, f"its config {beside}", remedy)
    return _type_config(info)


def host_unet_config(webui_info, info: CheckpointInfo) -> HostUNetConfig | None:
    found = config_file_of(webui_info, info)
    if found is None:
        return None
    params = {**_network_params(found.path, found.source), **INFERENCE_OVERRIDES}
    return HostUNetConfig.from_params(found.source, params, found.remedy)


def _network_params(path: str, source: str) -> dict:
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.load(path)
        network = OmegaConf.select(config, "model.params.network_config.params")
        if network is None:
            raise ValueError("it has no model.params.network_config.params, which an SDXL config has")
        params = OmegaConf.to_container(network, resolve=True)
    except Exception as error:
        raise CheckpointError(
            f"SDXL Refiner cannot read {source}: {type(error).__name__}: {error}. Correct the .yaml, or remove it "
            "when the checkpoint is a released SDXL model (the WebUI's own config then applies)."
        ) from error
    if not isinstance(params, dict):
        raise CheckpointError(f"SDXL Refiner cannot read {source}: its network_config.params is not a mapping.")
    return params
