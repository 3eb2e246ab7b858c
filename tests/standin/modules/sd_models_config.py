"""Stand-in of ``modules.sd_models_config`` (1.10.1): which config a checkpoint's model is built from.

As in the WebUI: the same-name ``.yaml`` beside the checkpoint, else the config for the type the
state dict shows (the SDXL part of ``guess_model_config_from_state_dict``). ``config_sdxl`` and
``config_sdxl_refiner`` are the WebUI's generative-models configs there; the ``webui`` fixture
points them at configs of its miniature models.
"""

import os

config_sdxl = None
config_sdxl_refiner = None


def guess_model_config_from_state_dict(sd, filename):
    if sd.get('conditioner.embedders.1.model.ln_final.weight', None) is not None:
        return config_sdxl
    if sd.get('conditioner.embedders.0.model.ln_final.weight', None) is not None:
        return config_sdxl_refiner
    raise NotImplementedError("the stand-in builds SDXL models only")


def find_checkpoint_config(state_dict, info):
    if info is None:
        return guess_model_config_from_state_dict(state_dict, "")

    config = find_checkpoint_config_near_filename(info)
    if config is not None:
        return config

    return guess_model_config_from_state_dict(state_dict, info.filename)


def find_checkpoint_config_near_filename(info):
    if info is None:
        return None

    config = f"{os.path.splitext(info.filename)[0]}.yaml"
    if os.path.exists(config):
        return config

    return None
