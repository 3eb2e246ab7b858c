"""The ``webui`` fixture: a fresh stand-in WebUI (``modules.*`` and ``sgm``) for one test.

It puts tests/standin first on ``sys.path``, imports fresh copies of the stand-in modules, gives
the test a models folder under ``tmp_path`` and, on teardown, removes every ``modules``/``sgm``
module and every already imported module of the extension's host layer and bindings (they bind
``modules.*`` at import), restores k-diffusion's ``torch`` (the samplers replace it per generation) and
``sys.path``. Torch runs one thread meanwhile: the tiny models are fastest so on a shared
machine. tests/conftest.py imports the fixture, so every test module can ask for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import k_diffusion.sampling
import pytest
import torch

STANDIN_ROOT = str(Path(__file__).resolve().parent)
_PURGED_PREFIXES = ("modules", "sgm", "sdxl_refiner.host", "sdxl_refiner.bindings", "sdxl_refiner.chooser")


def _purge() -> None:
    for name in list(sys.modules):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in _PURGED_PREFIXES):
            del sys.modules[name]


class StandinWebUI:
    """Handles on the stand-in: its modules, checkpoint files, model loading and generations."""

    def __init__(self, models_dir: Path):
        import modules.devices
        import modules.lowvram
        import modules.processing
        import modules.script_callbacks
        import modules.scripts
        import modules.sd_hijack  # patches sgm's UNet forward, as the WebUI does at start
        import modules.sd_models
        import modules.sd_models_config
        import modules.sd_samplers
        import modules.shared
        import sgm.models.diffusion

        self.shared = modules.shared
        self.devices = modules.devices
        self.lowvram = modules.lowvram
        self.processing = modules.processing
        self.script_callbacks = modules.script_callbacks
        self.scripts = modules.scripts
        self.sd_models = modules.sd_models
        self.sd_models_config = modules.sd_models_config
        self.sd_samplers = modules.sd_samplers
        self.sgm = sgm.models.diffusion
        self.models_dir = models_dir
        self.sd_models.model_path = str(models_dir)
        self._write_type_configs(models_dir.parent.parent / "repositories" / "generative-models" / "configs")
        self.shared.device = self.devices.device
        self.shared.state.begin()

    def module(self, name: str) -> ModuleType:
        __import__(name)
        return sys.modules[name]

    def _write_type_configs(self, folder: Path) -> None:
        """The WebUI's own configs for SDXL base and refiner, here for the miniature models' widths."""
        folder.mkdir(parents=True, exist_ok=True)
        widths = self.sgm.TinySdxlWidths()
        for kind, attribute in (("base", "config_sdxl"), ("refiner", "config_sdxl_refiner")):
            path = folder / f"sd_xl_{kind}.yaml"
            self.sgm.write_config(widths.unet_params(kind), path)
            setattr(self.sd_models_config, attribute, str(path))
        self.type_configs = {kind: widths.unet_params(kind) for kind in ("base", "refiner")}

    def write_checkpoint(self, name: str, kind: str = "base", seed: int = 0, *, engine=None, widths=None,
                         text_encoder_of: str | None = None, config_beside: bool | None = None) -> Path:
        """Writes a miniature SDXL ``kind`` ("base" or "refiner") checkpoint into the models folder
        and refreshes the checkpoint list. ``engine`` writes that model's weights instead;
        ``text_encoder_of`` (a checkpoint name) shares that file's second text encoder.

        A same-name ``.yaml`` with the model's config is written beside it when ``config_beside``,
        or by default when the WebUI's config for its type does not describe it."""
        if engine is None:
            widths = widths or self.sgm.TinySdxlWidths()
            donor = self.sd_models.build_model(self.checkpoint(text_encoder_of)) if text_encoder_of else None
            engine = self.sgm.build_engine(kind, widths, seed, text_encoder_of=donor)
        path = self.models_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sgm.save_engine(engine, path)
        config = path.with_suffix(".yaml")
        if config_beside is None:
            config_beside = engine.network_params not in self.type_configs.values()
        if config_beside:
            self.sgm.write_config(engine.network_params, config)
        else:
            config.unlink(missing_ok=True)
        self.sd_models.list_models()
        return path

    def write_pair(self, base: str = "base.safetensors", refiner: str = "refiner.safetensors") -> None:
        """A miniature base and a refiner that shares its second text encoder, as released; loads the base."""
        self.write_checkpoint(base, "base", seed=0)
        self.write_checkpoint(refiner, "refiner", seed=1, text_encoder_of=base)
        self.load(base)

    def checkpoint(self, name: str):
        info = self.sd_models.get_closet_checkpoint_match(name)
        assert info is not None, f"{name} is not in the stand-in's checkpoint list"
        return info

    def load(self, name: str):
        """Loads a checkpoint as the WebUI's current model (``shared.sd_model``), lowvram applied."""
        return self.sd_models.load_model(self.checkpoint(name))

    def txt2img(self, **fields):
        defaults = dict(prompt="a red fox", negative_prompt="blurry", steps=10, width=64, height=64,
                        sampler_name="Euler", seed=1, cfg_scale=5.0)
        return self.processing.StableDiffusionProcessingTxt2Img(**{**defaults, **fields})

    def img2img(self, **fields):
        if "init_images" not in fields:
            width, height = fields.get("width", 64), fields.get("height", 64)
            generator = torch.Generator().manual_seed(7)
            fields["init_images"] = [torch.rand(3, height, width, generator=generator)]
        defaults = dict(prompt="a red fox", negative_prompt="blurry", steps=10, width=64, height=64,
                        sampler_name="Euler", seed=1, cfg_scale=5.0, denoising_strength=0.5)
        return self.processing.StableDiffusionProcessingImg2Img(**{**defaults, **fields})

    def runner_with(self, script, args: list):
        """A ScriptRunner holding one AlwaysVisible ``script`` whose args are ``args``."""
        runner = self.scripts.ScriptRunner()
        runner.add_alwayson(script, len(args))
        return runner

    def attach(self, p, script, args: list) -> None:
        """Sets ``p.scripts`` and ``p.script_args`` as the WebUI does (which runs ``setup``)."""
        p.scripts = self.runner_with(script, args)
        p.script_args = [None, *args]

    def run(self, p):
        self.shared.state.begin()
        try:
            return self.processing.process_images(p)
        finally:
            p.close()
            self.shared.state.end()


@pytest.fixture
def webui(tmp_path: Path) -> Iterator[StandinWebUI]:
    saved_path = list(sys.path)
    saved_torch = k_diffusion.sampling.torch
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _purge()
    sys.path.insert(0, STANDIN_ROOT)
    try:
        yield StandinWebUI(tmp_path / "models" / "Stable-diffusion")
    finally:
        k_diffusion.sampling.torch = saved_torch
        torch.set_num_threads(saved_threads)
        _purge()
        sys.path[:] = saved_path
