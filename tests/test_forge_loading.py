"""The Forge binding's checks before it builds a refiner: what it refuses, and the conds it plans."""

from __future__ import annotations

import sys
import types

import pytest
from safetensors.torch import load_file, save_file

from sdxl_refiner.bindings.patcher import PatcherBinding
from sdxl_refiner.bindings.patcher import loading as forge_loading
from sdxl_refiner.chooser import running_in_forge
from sdxl_refiner.core.checkpoint import classify_checkpoint
from sdxl_refiner.core.errors import CheckpointError
from sdxl_refiner.host.checkpoints import ChosenRefiner, cond_spec
from tests.support.checkpoints import write_checkpoint


def chosen(path) -> ChosenRefiner:
    """The refiner as the shared layer hands it on: its list entry and its classification (header included)."""
    host_info = types.SimpleNamespace(filename=str(path), title="refiner.safetensors")
    return ChosenRefiner(host_info, classify_checkpoint(path))

V_YAML = """model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    denoiser_config:
      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser
      params:
        scaling_config:
          target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling
"""


class Engine:
    """Stands for a Forge diffusion engine: ``is_sdxl`` and its class name are what is read."""

    def __init__(self, is_sdxl: bool = True):
        self.is_sdxl = is_sdxl
        self.sd_checkpoint_info = type("Info", (), {"title": "loaded.safetensors [abc]"})()


class StableDiffusionXLRefiner(Engine):
    pass


def test_the_offline_suite_is_not_forge():
    assert not running_in_forge()


def test_an_sdxl_base_engine_is_accepted():
    forge_loading.require_sdxl_base(Engine())


def test_forges_refiner_engine_is_refused_as_the_base_although_it_says_sdxl():
    with pytest.raises(CheckpointError, match="is an SDXL refiner, which cannot compose") as raised:
        forge_loading.require_sdxl_base(StableDiffusionXLRefiner())
    assert "loaded.safetensors [abc]" in str(raised.value)


def test_an_engine_that_is_not_sdxl_is_refused():
    with pytest.raises(CheckpointError, match="is not SDXL"):
        forge_loading.require_sdxl_base(Engine(is_sdxl=False))


@pytest.mark.parametrize("kind, expected", [("refiner", "refiner"), ("base", "base")])
def test_the_cond_spec_comes_from_the_refiners_unet_with_forges_scalar_width(tmp_path, kind, expected):
    info = classify_checkpoint(write_checkpoint(tmp_path / f"{kind}.safetensors", kind))
    spec = cond_spec(info, PatcherBinding().scalar_embed_dim(Engine(), info))
    assert spec.kind == expected
    assert (spec.context_dim, spec.adm_in_channels) == (info.unet_config.context_dim, info.unet_config.adm_in_channels)
    assert spec.scalar_embed_dim == 256


def test_an_epsilon_refiner_is_not_refused(tmp_path):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    forge_loading.refuse_other_prediction(chosen(path))


@pytest.mark.parametrize("marker", forge_loading.OTHER_PREDICTION_KEYS)
def test_a_refiner_that_forge_would_build_as_v_prediction_or_edm_is_refused(tmp_path, marker):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    tensors = load_file(str(path))
    tensors[marker] = tensors[next(iter(tensors))][:1].clone()
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=f"not an epsilon-prediction model \\({marker}\\)") as raised:
        forge_loading.refuse_other_prediction(chosen(path))
    assert "refiner.safetensors" in str(raised.value)


def test_a_v_prediction_yaml_beside_the_refiner_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    (tmp_path / "refiner.yaml").write_text(V_YAML)
    with pytest.raises(CheckpointError, match=r"refiner\.yaml: parameterization v"):
        forge_loading.refuse_other_prediction(chosen(path))


def test_an_epsilon_yaml_and_a_broken_yaml_are_not_refused(tmp_path):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    (tmp_path / "refiner.yaml").write_text(V_YAML.replace("VScaling", "EpsScaling"))
    forge_loading.refuse_other_prediction(chosen(path))
    (tmp_path / "refiner.yaml").write_text("model: [unclosed")
    forge_loading.refuse_other_prediction(chosen(path))


def test_a_yaml_with_the_sd2_style_v_parameterization_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    (tmp_path / "refiner.yaml").write_text("model:\n  params:\n    parameterization: v\n")
    with pytest.raises(CheckpointError, match=r"refiner\.yaml: parameterization v"):
        forge_loading.refuse_other_prediction(chosen(path))


def test_every_marker_is_named_and_the_message_says_what_to_choose_instead(tmp_path):
    path = write_checkpoint(tmp_path / "refiner.safetensors", "refiner")
    tensors = load_file(str(path))
    for marker in ("v_pred", "edm_mean"):
        tensors[marker] = tensors[next(iter(tensors))][:1].clone()
    save_file(tensors, str(path))
    (tmp_path / "refiner.yaml").write_text(V_YAML)
    with pytest.raises(CheckpointError) as raised:
        forge_loading.refuse_other_prediction(chosen(path))
    assert "(v_pred, edm_mean, refiner.yaml: parameterization v)" in str(raised.value)
    assert str(raised.value).endswith("Choose an SDXL refiner made for the base (the released SDXL refiner "
                                      "predicts epsilon).")


def test_an_engine_without_checkpoint_info_is_still_refused_with_the_same_message():
    engine = StableDiffusionXLRefiner()
    del engine.sd_checkpoint_info
    with pytest.raises(CheckpointError) as raised:
        forge_loading.require_sdxl_base(engine)
    assert ("but the loaded model is an SDXL refiner, which cannot compose an image. Load an SDXL base checkpoint, "
            "and choose the refiner in the SDXL Refiner panel.") in str(raised.value)


class Patcher:
    """Stands for a Forge ``ModelPatcher``: its model, and the models it asks Forge to load with it."""

    def __init__(self, model: object, extras: list | None = None):
        self.model = model
        self.extra_model_patchers_during_sampling = extras if extras is not None else []


def forge_memory(monkeypatch, loaded: list[Patcher]) -> types.SimpleNamespace:
    """Forge's ``current_loaded_models`` and ``unload_model_clones`` as in the pinned
    ``backend/memory_management.py``: an entry goes when its patcher shares the given one's model."""
    entries = [types.SimpleNamespace(model=patcher) for patcher in loaded]
    unloaded: list[Patcher] = []

    def unload_model_clones(patcher: Patcher) -> None:
        for entry in [entry for entry in entries if entry.model.model is patcher.model]:
            entries.remove(entry)
            unloaded.append(entry.model)

    memory = types.SimpleNamespace(current_loaded_models=entries, unload_model_clones=unload_model_clones,
                                   unloaded=unloaded)
    return as_backend(monkeypatch, memory)


def as_backend(monkeypatch, memory: types.SimpleNamespace) -> types.SimpleNamespace:
    """``memory`` as the host's ``backend.memory_management`` for the test."""
    backend = types.ModuleType("backend")
    backend.memory_management = memory
    monkeypatch.setitem(sys.modules, "backend", backend)
    monkeypatch.setitem(sys.modules, "backend.memory_management", memory)
    return memory


def refiner_patcher() -> Patcher:
    kmodel = types.SimpleNamespace()
    patcher = Patcher(kmodel)
    setattr(kmodel, forge_loading.PATCHER_ATTRIBUTE, patcher)
    return patcher


def test_releasing_unloads_the_refiners_and_takes_them_off_the_last_pass_clone_only(monkeypatch):
    refiner, other_refiner = refiner_patcher(), refiner_patcher()
    control = Patcher(types.SimpleNamespace())
    base_clone = Patcher(types.SimpleNamespace(), extras=[control, refiner])
    # the text encoders' patcher is a plain ModelPatcher: no list of models to load with it
    text_encoders = types.SimpleNamespace(model=types.SimpleNamespace())
    memory = forge_memory(monkeypatch, [base_clone, text_encoders, refiner, other_refiner])
    assert forge_loading.release_from_forge() == 2
    assert memory.unloaded == [refiner, other_refiner]
    assert [entry.model for entry in memory.current_loaded_models] == [base_clone, text_encoders]
    assert base_clone.extra_model_patchers_during_sampling == [control]
    assert forge_loading.release_from_forge() == 0


def neo_memory(monkeypatch, loaded: list[Patcher]) -> types.SimpleNamespace:
    """Forge Neo's ``current_loaded_models`` (no ``unload_model_clones``): entries that unload their
    model and are then taken off the list, as in the pinned Neo's ``backend/memory_management.py``."""
    unloaded: list[Patcher] = []

    class LoadedModel:
        def __init__(self, patcher: Patcher):
            self.model = patcher

        def model_unload(self) -> None:
            unloaded.append(self.model)

    memory = types.SimpleNamespace(current_loaded_models=[LoadedModel(patcher) for patcher in loaded],
                                   unloaded=unloaded)
    return as_backend(monkeypatch, memory)


def test_releasing_in_neo_unloads_each_refiner_entry_and_takes_it_off_the_list(monkeypatch):
    refiner, other_refiner = refiner_patcher(), refiner_patcher()
    base_clone = Patcher(types.SimpleNamespace(), extras=[refiner])
    memory = neo_memory(monkeypatch, [base_clone, refiner, other_refiner])
    assert forge_loading.release_from_forge() == 2
    assert memory.unloaded == [refiner, other_refiner]
    assert [entry.model for entry in memory.current_loaded_models] == [base_clone]
    assert base_clone.extra_model_patchers_during_sampling == []
    assert forge_loading.release_from_forge() == 0
