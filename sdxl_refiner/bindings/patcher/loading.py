"""The refiner's UNet as Forge builds UNets: its config detection, its class, its memory management.

Only the UNet's tensors are read from the file (the core's reader); ``huggingface_guess`` names
the model type and config from them, as Forge's loader does for a main model, and Forge's own
component loader builds the ``IntegratedUNet2DConditionModel`` with the storage and computation
dtypes, devices and manual casting Forge chooses. The result is a ``UnetPatcher`` around a
``KModel``, cached between generations; Forge's memory management places it when sampling starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sdxl_refiner.core.checkpoint import CheckpointInfo, read_unet_state_dict
from sdxl_refiner.core.errors import Cause, CheckpointError
from sdxl_refiner.core.file_digest import FileDigest
from sdxl_refiner.host import checkpoints
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.resources import resources

PATCHER_ATTRIBUTE = "sdxl_refiner_patcher"
# What the cache keys a Forge-built refiner by besides its file: Forge chooses dtype and device itself.
FORGE_BUILT = ("forge",)
# Keys by which Forge's model detection turns a checkpoint into a v-prediction or EDM model.
OTHER_PREDICTION_KEYS = ("v_pred", "edm_mean", "edm_std", "edm_vpred.sigma_max")


def require_sdxl_base(sd_model) -> None:
    """Forge's refiner engine also says ``is_sdxl``: a refiner loaded as the main model is refused too."""
    checkpoints.require_sdxl_base(sd_model)
    if type(sd_model).__name__ == "StableDiffusionXLRefiner":
        title = getattr(getattr(sd_model, "sd_checkpoint_info", None), "title", None)
        named = f" {title!r}" if title else ""
        raise CheckpointError(
            f"SDXL Refiner needs an SDXL base model, but the loaded model{named} is an SDXL refiner, which "
            "cannot compose an image. Load an SDXL base checkpoint, and choose the refiner in the SDXL Refiner panel.",
            Cause.CONFLICT,
        )


def refuse_other_prediction(chosen: ChosenRefiner) -> None:
    """Forge would build a v-prediction or EDM refiner with another sigma schedule than the base's
    loop runs; the handoff shares one loop, so such a refiner is refused rather than run wrongly."""
    keys = chosen.info.keys()
    markers = [key for key in OTHER_PREDICTION_KEYS if key in keys]
    title = chosen.title
    yaml = Path(os.path.splitext(chosen.path)[0] + ".yaml")
    if yaml.is_file() and _yaml_says_v_prediction(yaml):
        markers.append(f"{yaml.name}: parameterization v")
    if markers:
        raise CheckpointError(
            f"SDXL Refiner checkpoint {title!r} is not an epsilon-prediction model ({', '.join(markers)}), so it "
            "cannot continue the base's sampling loop. Choose an SDXL refiner made for the base (the released "
            "SDXL refiner predicts epsilon)."
        )


def _yaml_says_v_prediction(yaml: Path) -> bool:
    import yaml as yaml_module

    try:
        config = yaml_module.safe_load(yaml.read_text()) or {}
    except (OSError, yaml_module.YAMLError):
        return False
    params = (config.get("model") or {}).get("params") or {}
    scaling = ((params.get("denoiser_config") or {}).get("params") or {}).get("scaling_config") or {}
    return params.get("parameterization") == "v" or str(scaling.get("target", "")).endswith(".VScaling")


def load_refiner(info: CheckpointInfo, digest: FileDigest | None = None) -> torch.nn.Module:
    """The refiner ``KModel``, built the way Forge's loader builds a main model's UNet; its
    ``UnetPatcher`` rides on it so that the cache keeps both (Forge tracks loaded models by patcher).
    The classified checkpoint's header serves the read, which hashes the file when ``digest`` asks."""
    from backend.patcher.unet import UnetPatcher

    state = read_unet_state_dict(info, digest=digest)
    guess = _guess(state, str(info.path))
    unet, scheduler = _components(guess, state)
    patcher = UnetPatcher.from_model(model=unet, diffusers_scheduler=scheduler, config=guess)
    kmodel = patcher.model
    kmodel.requires_grad_(False).eval()
    setattr(kmodel, PATCHER_ATTRIBUTE, patcher)
    return kmodel


def patcher_of(kmodel: torch.nn.Module):
    return getattr(kmodel, PATCHER_ATTRIBUTE)


def _guess(state: dict[str, torch.Tensor], path: str):
    import huggingface_guess

    guess = huggingface_guess.model_config_from_unet(state, "", use_base_if_no_match=False)
    repo = getattr(guess, "huggingface_repo", None)
    if guess is None or repo not in ("stabilityai/stable-diffusion-xl-refiner-1.0", "stabilityai/stable-diffusion-xl-base-1.0"):
        raise CheckpointError(
            f"Refiner checkpoint {path!r}: Forge's model detection does not recognise its UNet as an SDXL base or "
            f"refiner ({repo or 'no match'}). Choose an SDXL refiner or base checkpoint."
        )
    guess.unet_key_prefix = [""]
    return guess


def _components(guess, state: dict[str, torch.Tensor]):
    """Forge's own component loader, with the config folder Forge keeps for this model type."""
    import backend.loader
    from diffusers import DiffusionPipeline

    folder = os.path.join(os.path.dirname(backend.loader.__file__), "huggingface", guess.huggingface_repo)
    scheduler_class = DiffusionPipeline.load_config(folder)["scheduler"][1]
    scheduler = backend.loader.load_huggingface_component(guess, "scheduler", "diffusers", scheduler_class, folder, None)
    scheduler.config.prediction_type = "epsilon"
    with torch.no_grad():
        unet = backend.loader.load_huggingface_component(guess, "unet", "diffusers", "UNet2DConditionModel", folder, state)
    return unet, scheduler


def refiner_patcher(chosen: ChosenRefiner, digest: FileDigest | None = None):
    """The cached refiner's ``UnetPatcher``, loaded now if it is not cached.

    Through the same cache as the WebUI binding (by file identity), with Forge's builder. Waited
    for here rather than overlapped with the base's steps: Forge's builder swaps its layer classes
    in while it runs, and Forge must know the patcher before sampling starts to place it.
    """
    pending = resources().cache.start_loading(
        chosen.path, lambda _path: load_refiner(chosen.info, digest), FORGE_BUILT
    )
    return patcher_of(pending.result())


def release_from_forge() -> int:
    """Lets go of the refiners wherever Forge's list of loaded models holds them, so that dropping
    them from the cache frees their memory; returns how many refiner patchers were loaded there.

    Forge keeps each model it placed listed until it needs the memory for another: the refiners'
    own patchers, and the last pass's UNet clone, which names the refiner among the models to load
    with it. That clone is never sampled with again (each pass clones the base's patcher anew).
    """
    from backend import memory_management

    ours = [loaded.model for loaded in memory_management.current_loaded_models if _is_refiner(loaded.model)]
    unload_clones = getattr(memory_management, "unload_model_clones", None)
    for patcher in ours:
        if unload_clones is not None:
            unload_clones(patcher)
        else:  # Neo: no such function; each entry of its list unloads its model, then leaves the list
            _unload_entries_of(memory_management, patcher)
    for loaded in memory_management.current_loaded_models:
        extras = getattr(loaded.model, "extra_model_patchers_during_sampling", None)
        if extras:
            extras[:] = [patcher for patcher in extras if not _is_refiner(patcher)]
    return len(ours)


def _unload_entries_of(memory_management, patcher) -> None:
    for loaded in [loaded for loaded in memory_management.current_loaded_models if loaded.model is patcher]:
        loaded.model_unload()
        memory_management.current_loaded_models.remove(loaded)


def _is_refiner(patcher: object) -> bool:
    return hasattr(getattr(patcher, "model", None), PATCHER_ATTRIBUTE)
