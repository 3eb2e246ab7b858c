"""The refiner's own text encoder in Forge: its tensors as Forge's own converter names them, and
the swap into the base's ``clip_g`` that always puts the base's weights back.

The converter is Forge's ``huggingface_guess`` from the pinned archive. The module here is a small
stand-in with the Hugging Face CLIP layout that Forge's ``IntegratedCLIP`` has; the live Forge
tests load the real one and check the result against Forge's own refiner.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from sdxl_refiner.bindings.patcher import own_text
from sdxl_refiner.core.checkpoint import REFINER_BIGG_PREFIX
from sdxl_refiner.core.errors import SettingsError
from tests.support.forge_sources import ForgeUnavailable, forge_package_root

WIDTH, LAYERS, TOKENS, VOCAB = 8, 2, 5, 11


@pytest.fixture(scope="module")
def forge_guess():
    try:
        root = forge_package_root("huggingface_guess")
    except ForgeUnavailable as missing:
        pytest.skip(str(missing))
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.split(".")[0] == "huggingface_guess"]:
            del sys.modules[name]


def openclip_tensors(seed: int) -> dict[str, torch.Tensor]:
    """The refiner file's encoder in OpenCLIP's own layout (a fused q/k/v projection per layer)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(torch.float16)

    tensors = {
        "token_embedding.weight": draw(VOCAB, WIDTH),
        "positional_embedding": draw(TOKENS, WIDTH),
        "ln_final.weight": draw(WIDTH),
        "ln_final.bias": draw(WIDTH),
        "text_projection": draw(WIDTH, WIDTH),
        "logit_scale": draw(()),
    }
    for layer in range(LAYERS):
        block = f"transformer.resblocks.{layer}."
        tensors.update({
            block + "attn.in_proj_weight": draw(3 * WIDTH, WIDTH),
            block + "attn.in_proj_bias": draw(3 * WIDTH),
            block + "attn.out_proj.weight": draw(WIDTH, WIDTH),
            block + "attn.out_proj.bias": draw(WIDTH),
            block + "ln_1.weight": draw(WIDTH),
            block + "ln_1.bias": draw(WIDTH),
            block + "ln_2.weight": draw(WIDTH),
            block + "ln_2.bias": draw(WIDTH),
            block + "mlp.c_fc.weight": draw(4 * WIDTH, WIDTH),
            block + "mlp.c_fc.bias": draw(4 * WIDTH),
            block + "mlp.c_proj.weight": draw(WIDTH, 4 * WIDTH),
            block + "mlp.c_proj.bias": draw(WIDTH),
        })
    return tensors


def refiner_file(tmp_path, seed: int = 1) -> tuple[str, dict[str, torch.Tensor]]:
    encoder = openclip_tensors(seed)
    tensors = {REFINER_BIGG_PREFIX + key: value for key, value in encoder.items()}
    tensors["model.diffusion_model.out.2.bias"] = torch.zeros(4, dtype=torch.bfloat16)
    tensors["first_stage_model.decoder.conv_out.bias"] = torch.zeros(3, dtype=torch.float16)
    path = tmp_path / f"refiner-{seed}.safetensors"
    save_file(tensors, str(path))
    return str(path), encoder


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = torch.nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, name, torch.nn.Linear(WIDTH, WIDTH))
        self.layer_norm1 = torch.nn.LayerNorm(WIDTH)
        self.layer_norm2 = torch.nn.LayerNorm(WIDTH)
        self.mlp = torch.nn.Module()
        self.mlp.fc1 = torch.nn.Linear(WIDTH, 4 * WIDTH)
        self.mlp.fc2 = torch.nn.Linear(4 * WIDTH, WIDTH)


class EmbeddingForTextualInversion(torch.nn.Module):
    """What Forge's prompt engine puts in place of ``token_embedding``: the embedding as ``wrapped``,
    and its weight again as ``weight`` (two state-dict names for one tensor)."""

    def __init__(self, wrapped: torch.nn.Embedding):
        super().__init__()
        self.wrapped = wrapped
        self.weight = wrapped.weight


class HuggingFaceClip(torch.nn.Module):
    """The parameter layout of Forge's ``IntegratedCLIP(CLIPTextModel, add_text_projection=True)``,
    with the token embedding wrapped as Forge's SDXL engine wraps it."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.transformer = torch.nn.Module()
        text = self.transformer.text_model = torch.nn.Module()
        text.embeddings = torch.nn.Module()
        text.embeddings.token_embedding = torch.nn.Embedding(VOCAB, WIDTH)
        text.embeddings.position_embedding = torch.nn.Embedding(TOKENS, WIDTH)
        text.embeddings.register_buffer("position_ids", torch.arange(TOKENS)[None])
        text.encoder = torch.nn.Module()
        text.encoder.layers = torch.nn.ModuleList(Layer() for _ in range(LAYERS))
        text.final_layer_norm = torch.nn.LayerNorm(WIDTH)
        self.transformer.text_projection = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))
        self.to(dtype)
        text.embeddings.token_embedding = EmbeddingForTextualInversion(text.embeddings.token_embedding)


class Patcher:
    """Stands for the clip's ``ModelPatcher``; records what the module held when Forge loaded it."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.loaded_with: list[torch.Tensor] = []


def engine(module: torch.nn.Module) -> types.SimpleNamespace:
    clip = types.SimpleNamespace(cond_stage_model=types.SimpleNamespace(clip_g=module), patcher=Patcher(module))
    return types.SimpleNamespace(forge_objects=types.SimpleNamespace(clip=clip))


@pytest.fixture
def memory_management(monkeypatch):
    """Forge's ``backend.memory_management.load_model_gpu``: records the weights it was called with."""

    def load_model_gpu(patcher: Patcher) -> None:
        patcher.loaded_with.append(patcher.module.transformer.text_projection.weight.detach().clone())

    backend = types.ModuleType("backend")
    backend.memory_management = types.SimpleNamespace(load_model_gpu=load_model_gpu)
    monkeypatch.setitem(sys.modules, "backend", backend)
    monkeypatch.setitem(sys.modules, "backend.memory_management", backend.memory_management)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_the_refiners_encoder_gets_the_base_modules_names_split_and_transposed_as_forge_converts_it(
        tmp_path, forge_guess):
    path, encoder = refiner_file(tmp_path)
    tensors = own_text.refiner_encoder_tensors(path)
    module = HuggingFaceClip()
    expected = {name.replace("wrapped.", "") for name in module.state_dict() if name not in own_text.NOT_LOADED}
    assert set(tensors) == expected
    q, k, v = encoder["transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    layer = "transformer.text_model.encoder.layers.1."
    assert torch.equal(tensors[layer + "self_attn.q_proj.weight"], q)
    assert torch.equal(tensors[layer + "self_attn.k_proj.weight"], k)
    assert torch.equal(tensors[layer + "self_attn.v_proj.weight"], v)
    assert torch.equal(tensors["transformer.text_projection.weight"], encoder["text_projection"].T)
    assert torch.equal(tensors["transformer.text_model.final_layer_norm.weight"], encoder["ln_final.weight"])
    assert own_text.fits(engine(module), tensors)


def test_a_file_without_an_encoder_has_no_tensors_and_does_not_fit(tmp_path, forge_guess):
    path = tmp_path / "unet-only.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(4)}, str(path))
    tensors = own_text.refiner_encoder_tensors(str(path))
    assert tensors == {}
    assert not own_text.fits(engine(HuggingFaceClip()), tensors)


def test_an_encoder_of_another_width_or_without_a_layer_does_not_fit(tmp_path, forge_guess):
    tensors = own_text.refiner_encoder_tensors(refiner_file(tmp_path)[0])
    base = engine(HuggingFaceClip())
    wider = {**tensors, "transformer.text_model.final_layer_norm.weight": torch.ones(WIDTH + 1)}
    assert not own_text.fits(base, wider)
    fewer = {name: value for name, value in tensors.items() if "layers.1." not in name}
    assert not own_text.fits(base, fewer)
    assert not own_text.fits(types.SimpleNamespace(forge_objects=types.SimpleNamespace()), tensors)
    assert not own_text.fits(types.SimpleNamespace(), tensors)


def test_inside_the_block_the_module_holds_the_refiners_weights_in_its_dtype_and_the_base_is_back_after(
        tmp_path, forge_guess, memory_management):
    tensors = own_text.refiner_encoder_tensors(refiner_file(tmp_path)[0])
    module = HuggingFaceClip(torch.bfloat16)
    base = engine(module)
    before = snapshot(module)
    parameters = dict(module.named_parameters())
    with own_text.refiner_encoder_in(base, tensors):
        inside = module.state_dict()
        for name, value in tensors.items():
            assert inside[name].dtype == torch.bfloat16
            assert torch.equal(inside[name], value.to(torch.bfloat16)), name
        embedding = module.transformer.text_model.embeddings.token_embedding
        refiners = tensors["transformer.text_model.embeddings.token_embedding.weight"].to(torch.bfloat16)
        assert torch.equal(embedding.weight, refiners) and torch.equal(embedding.wrapped.weight, refiners)
        assert torch.equal(inside["transformer.text_model.embeddings.position_ids"],
                           before["transformer.text_model.embeddings.position_ids"])
    after = snapshot(module)
    embedding = module.transformer.text_model.embeddings.token_embedding
    assert embedding.weight is embedding.wrapped.weight  # one tensor under two names, as before
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert all(parameter is parameters[name] for name, parameter in module.named_parameters())
    # Forge placed the module (and merged any LoRA) while it held the base's weights
    [loaded] = base.forge_objects.clip.patcher.loaded_with
    assert torch.equal(loaded, before["transformer.text_projection.weight"])


def test_the_base_is_back_when_the_encoding_fails(tmp_path, forge_guess, memory_management):
    tensors = own_text.refiner_encoder_tensors(refiner_file(tmp_path)[0])
    module = HuggingFaceClip()
    before = snapshot(module)
    with pytest.raises(RuntimeError, match="interrupted"), own_text.refiner_encoder_in(engine(module), tensors):
        raise RuntimeError("interrupted")
    assert all(torch.equal(module.state_dict()[name], before[name]) for name in before)


@pytest.mark.parametrize(("patches", "value"), [
    ("forge_online_loras", {"lora": object()}),  # Forge 2
    ("weight_function", [object()]),  # Neo (ComfyUI's patcher): a LoRA applied as the layer runs
    ("bias_function", [object()]),
])
def test_a_lora_that_forge_adds_at_run_time_to_the_base_encoder_is_refused_before_any_swap(
        tmp_path, forge_guess, memory_management, patches, value):
    tensors = own_text.refiner_encoder_tensors(refiner_file(tmp_path)[0])
    module = HuggingFaceClip()
    for layer in module.modules():  # Neo's layers carry empty lists where nothing is patched
        layer.weight_function, layer.bias_function = [], []
    setattr(module.transformer.text_model.encoder.layers[0].mlp.fc1, patches, value)
    before = snapshot(module)
    with pytest.raises(SettingsError, match="remove the LoRA") as raised, \
            own_text.refiner_encoder_in(engine(module), tensors):
        pytest.fail("the block ran")
    assert "transformer.text_model.encoder.layers.0.mlp.fc1" in str(raised.value)
    assert all(torch.equal(module.state_dict()[name], before[name]) for name in before)
