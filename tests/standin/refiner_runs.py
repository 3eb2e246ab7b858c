"""Running generations through the real extension script (scripts/sdxl_refiner.py) on the stand-in."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch

SCRIPT_PATH = Path(__file__).resolve().parents[2] / "scripts" / "sdxl_refiner.py"


def load_script():
    """A fresh SdxlRefinerScript, as the WebUI loads scripts/ files (registering its callbacks)."""
    spec = importlib.util.spec_from_file_location("sdxl_refiner_script_under_test", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SdxlRefinerScript()


def ui_args(enabled=True, checkpoint="refiner.safetensors", steps_percent=20.0, aesthetic_score=6.0,
            negative_aesthetic_score=2.5, start_step=0, hires_pass="default", **refiner_own) -> list:
    """The panel's args; the refiner's own prompt, negative prompt, CFG and noise only when given, so
    most runs send the seven args of the panel before those existed."""
    args = [enabled, checkpoint, steps_percent, aesthetic_score, negative_aesthetic_score, start_step, hires_pass]
    if refiner_own:
        own = {"prompt": "", "negative_prompt": "", "cfg_scale": 0.0, "noise_multiplier": 1.0}
        unknown = set(refiner_own) - set(own)
        assert not unknown, f"not a panel arg: {unknown}"
        args += list({**own, **refiner_own}.values())
    return args


@dataclass
class CallTrace:
    """Which UNet served each model call, at which sigma (the UNet sees timesteps), with its conds."""

    calls: list[tuple[str, float, int, int]] = field(default_factory=list)
    vectors: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def hook(self, name: str):
        def record(module, args, kwargs):
            timesteps = kwargs.get("timesteps", args[1] if len(args) > 1 else None)
            context = kwargs.get("context")
            y = kwargs.get("y")
            self.calls.append((name, float(timesteps.reshape(-1)[0]), context.shape[-1], y.shape[-1]))
            self.vectors.append((name, y.detach().clone()))
        return record

    def attach(self, module: torch.nn.Module, name: str):
        return module.register_forward_pre_hook(self.hook(name), with_kwargs=True)

    def names(self) -> list[str]:
        return [name for name, *_ in self.calls]


def cached_refiner(webui, name: str = "refiner.safetensors", dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The refiner UNet the extension will use (same cache entry: same file and config), loaded now."""
    from sdxl_refiner.bindings.webui import unet
    from sdxl_refiner.core.residency import StoragePlan
    from sdxl_refiner.host.checkpoints import classify_refiner

    chosen = classify_refiner(webui.checkpoint(name))
    kept_dtype = webui.devices.dtype_unet
    webui.devices.dtype_unet = dtype or kept_dtype
    try:
        pending = unet.start_loading(chosen, StoragePlan("cpu", "cpu", False, False), unet.unet_config_for(chosen))
    finally:
        webui.devices.dtype_unet = kept_dtype
    return pending.result()


def traced(webui) -> CallTrace:
    """A trace of the loaded base UNet's calls and the cached refiner's, named "base" and "refiner"."""
    trace = CallTrace()
    trace.attach(webui.shared.sd_model.model.diffusion_model, "base")
    trace.attach(cached_refiner(webui), "refiner")
    return trace


def refine(webui, p, args: list | None = None, script=None):
    """Runs ``p`` with the extension's script attached; returns the Processed result."""
    script = script or load_script()
    webui.attach(p, script, ui_args() if args is None else args)
    return webui.run(p)


def snapshot(webui) -> dict:
    """The base as the restore checks compare it: the module in the slot, its weights, device and hooks."""
    unet = webui.shared.sd_model.model.diffusion_model
    return {
        "unet": unet,
        "weights": {k: v.clone() for k, v in unet.state_dict().items()},
        "device": next(unet.parameters()).device,
        "hooks": {name: dict(module._forward_pre_hooks) for name, module in unet.named_modules()},
        "model_hooks": dict(webui.shared.sd_model.model._forward_pre_hooks),
    }


def assert_restored(webui, before) -> None:
    unet = webui.shared.sd_model.model.diffusion_model
    assert unet is before["unet"]
    assert next(unet.parameters()).device == before["device"]
    state = unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before["weights"].items())
    assert {name: dict(module._forward_pre_hooks) for name, module in unet.named_modules()} == before["hooks"]
    assert dict(webui.shared.sd_model.model._forward_pre_hooks) == before["model_hooks"]
