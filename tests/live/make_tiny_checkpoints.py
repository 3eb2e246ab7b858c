"""Write tiny SDXL checkpoints that a WebUI 1.10.1 loads and samples on a CPU in seconds.

The live tests need a real WebUI running real SDXL code paths (its checkpoint loader, its
prompt machinery, its samplers) without multi-gigabyte downloads. So the models here are built
by generative-models' own ``DiffusionEngine`` from a small same-name ``.yaml``, randomly
initialised with a fixed seed, and saved whole: the WebUI then finds exactly the keys it
expects. Everything stays offline: the CLIP-L tokenizer folder is built from the BPE vocabulary
that ships inside open_clip, and the small OpenCLIP text tower is registered as an open_clip
model config.

Run it with the WebUI's Python, from anywhere::

    /path/to/venv/bin/python tests/live/make_tiny_checkpoints.py \\
        /path/to/stable-diffusion-webui/models/Stable-diffusion

It needs the WebUI's ``repositories/generative-models`` (importable as ``sgm``),
``repositories/stable-diffusion-stability-ai`` (importable as ``ldm``, for the SD1.x model) and the WebUI's
packages (open_clip, transformers, omegaconf, safetensors). It is never imported by the test
suite. It writes into the given ``models/Stable-diffusion`` folder and beside it:

- ``Stable-diffusion/tiny-sdxl-base.safetensors`` (+ ``.yaml``): a base-type SDXL model;
- ``Stable-diffusion/tiny-sdxl-base-copy.safetensors`` (+ ``.yaml``): the same bytes under
  another name, so "refiner = a copy of the base" can be asked for;
- ``Stable-diffusion/tiny-sdxl-refiner.safetensors`` (+ ``.yaml``): a refiner-type model whose
  OpenCLIP text encoder equals the base's (as with the released pair);
- ``Stable-diffusion/tiny-sdxl-refiner-own-text.safetensors`` (+ ``.yaml``): a refiner-type model
  with a text encoder of its own (prompts must be encoded again);
- ``Stable-diffusion/tiny-sdxl-refiner-wrong-config.safetensors`` (+ ``.yaml``): the refiner's
  bytes with a ``.yaml`` whose ``model_channels`` (48) its weights contradict, for that refusal;
- ``Stable-diffusion/tiny-sdxl-refiner-fp16.safetensors`` (+ ``.yaml``): the refiner in half
  precision, and ``tiny-sdxl-refiner-rounded.safetensors`` the same rounded values in float32;
- ``Stable-diffusion/sub folder/tiny sdxl refiner.safetensors`` (+ ``.yaml``): the refiner's
  bytes under a name with spaces, in a subfolder;
- ``Stable-diffusion/tiny-sd1.safetensors`` (+ ``.yaml``): an SD1.x-type model (another latent
  space), for the refusals of a non-SDXL base or refiner;
- ``VAE/tiny-sdxl-vae.safetensors``: the base's autoencoder alone;
- ``Lora/tiny-sdxl-lora.safetensors``: a LoRA (kohya key names) on every linear layer of the
  base UNet's transformer blocks, which no other UNet here has the shapes for;
- ``tiny-sdxl-clip-l/``: the CLIP-L config and tokenizer folder the ``.yaml`` files point at;
- ``<webui>/embeddings/tiny-sdxl-ti.safetensors``: an SDXL textual-inversion embedding of two
  vectors (``clip_l`` and ``clip_g``) for the tiny text encoders.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SEED = 20240723
OPEN_CLIP_ARCH = "tiny-sdxl-openclip"
CLIP_L_FOLDER = "tiny-sdxl-clip-l"
SCALAR_EMBED_DIM = 256
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408

CLIP_L_WIDTH = 32
OPENCLIP_WIDTH = 64
OPENCLIP_POOLED = 64
# Not the SDXL family's 64, and not the same for both: the weights do not carry the head width,
# so a refiner UNet not built from its file's config computes another image.
BASE_HEAD_CHANNELS = 16
REFINER_HEAD_CHANNELS = 32
WRONG_MODEL_CHANNELS = 48

OPENCLIP_ARCH_CONFIG = {
    "embed_dim": OPENCLIP_POOLED,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16},
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": VOCAB_SIZE,
        "width": OPENCLIP_WIDTH,
        "heads": 1,
        "layers": 3,
    },
}

CLIP_L_CONFIG = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": CLIP_L_WIDTH,
    "intermediate_size": 4 * CLIP_L_WIDTH,
    "projection_dim": CLIP_L_WIDTH,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "max_position_embeddings": CONTEXT_LENGTH,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}


def autoencoder_config() -> dict[str, Any]:
    return {
        "target": "sgm.models.autoencoder.AutoencoderKLInferenceWrapper",
        "params": {
            "embed_dim": 4,
            "monitor": "val/rec_loss",
            "ddconfig": {
                "attn_type": "vanilla-xformers",
                "double_z": True,
                "z_channels": 4,
                "resolution": 256,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 32,
                "ch_mult": [1, 1, 2, 2],
                "num_res_blocks": 1,
                "attn_resolutions": [],
                "dropout": 0.0,
            },
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }


def denoiser_config() -> dict[str, Any]:
    module = "sgm.modules.diffusionmodules"
    return {
        "target": f"{module}.denoiser.DiscreteDenoiser",
        "params": {
            "num_idx": 1000,
            "weighting_config": {"target": f"{module}.denoiser_weighting.EpsWeighting"},
            "scaling_config": {"target": f"{module}.denoiser_scaling.EpsScaling"},
            "discretization_config": {"target": f"{module}.discretizer.LegacyDDPMDiscretization"},
        },
    }


def scalar_embedder(input_key: str) -> dict[str, Any]:
    return {
        "is_trainable": False,
        "input_key": input_key,
        "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
        "params": {"outdim": SCALAR_EMBED_DIM},
    }


def openclip_embedder() -> dict[str, Any]:
    return {
        "is_trainable": False,
        "input_key": "txt",
        "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
        "params": {
            "arch": OPEN_CLIP_ARCH,
            "version": None,
            "freeze": True,
            "layer": "penultimate",
            "always_return_pooled": True,
            "legacy": False,
        },
    }


def clip_l_embedder(clip_l_folder: Path) -> dict[str, Any]:
    return {
        "is_trainable": False,
        "input_key": "txt",
        "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
        "params": {"version": str(clip_l_folder), "layer": "hidden", "layer_idx": CLIP_L_CONFIG["num_hidden_layers"] - 1},
    }


def engine_config(network: Mapping[str, Any], embedders: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {
            "target": "sgm.models.diffusion.DiffusionEngine",
            "params": {
                "scale_factor": 0.13025,
                "disable_first_stage_autocast": True,
                "denoiser_config": denoiser_config(),
                "network_config": {
                    "target": "sgm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": dict(network),
                },
                "conditioner_config": {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": embedders}},
                "first_stage_config": autoencoder_config(),
            },
        }
    }


def unet_params(*, model_channels: int, adm_in_channels: int, context_dim: int | list[int],
                transformer_depth: int | list[int], num_head_channels: int) -> dict[str, Any]:
    return {
        "adm_in_channels": adm_in_channels,
        "num_classes": "sequential",
        "use_checkpoint": True,
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": model_channels,
        "attention_resolutions": [2],
        "num_res_blocks": 2,
        "channel_mult": [1, 2],
        "num_head_channels": num_head_channels,
        "use_spatial_transformer": True,
        "use_linear_in_transformer": True,
        "transformer_depth": transformer_depth,
        "context_dim": context_dim,
        "spatial_transformer_attn_type": "softmax-xformers",
        "legacy": False,
    }


def base_config(clip_l_folder: Path) -> dict[str, Any]:
    network = unet_params(
        model_channels=32,
        adm_in_channels=OPENCLIP_POOLED + 6 * SCALAR_EMBED_DIM,
        context_dim=CLIP_L_WIDTH + OPENCLIP_WIDTH,
        transformer_depth=[1, 2],
        num_head_channels=BASE_HEAD_CHANNELS,
    )
    embedders = [
        clip_l_embedder(clip_l_folder),
        openclip_embedder(),
        scalar_embedder("original_size_as_tuple"),
        scalar_embedder("crop_coords_top_left"),
        scalar_embedder("target_size_as_tuple"),
    ]
    return engine_config(network, embedders)


def refiner_config() -> dict[str, Any]:
    network = unet_params(
        model_channels=64,
        adm_in_channels=OPENCLIP_POOLED + 5 * SCALAR_EMBED_DIM,
        context_dim=OPENCLIP_WIDTH,
        transformer_depth=1,
        num_head_channels=REFINER_HEAD_CHANNELS,
    )
    embedders = [
        openclip_embedder(),
        scalar_embedder("original_size_as_tuple"),
        scalar_embedder("crop_coords_top_left"),
        scalar_embedder("aesthetic_score"),
    ]
    return engine_config(network, embedders)


def wrong_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The refiner's config with a UNet width its weights do not have: a refusal to test."""
    wrong = json.loads(json.dumps(config))
    wrong["model"]["params"]["network_config"]["params"]["model_channels"] = WRONG_MODEL_CHANNELS
    return wrong


def sd1_config(clip_l_folder: Path) -> dict[str, Any]:
    """An SD1.x model as the WebUI's ``configs/v1-inference.yaml`` describes it, made small."""
    autoencoder = autoencoder_config()
    autoencoder["target"] = "ldm.models.autoencoder.AutoencoderKL"
    autoencoder["params"]["ddconfig"]["attn_type"] = "vanilla"
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.00085,
                "linear_end": 0.0120,
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": 1000,
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": 64,
                "channels": 4,
                "cond_stage_trainable": False,
                "conditioning_key": "crossattn",
                "monitor": "val/loss_simple_ema",
                "scale_factor": 0.18215,
                "use_ema": False,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 32,
                        "in_channels": 4,
                        "out_channels": 4,
                        "model_channels": 32,
                        "attention_resolutions": [2],
                        "num_res_blocks": 2,
                        "channel_mult": [1, 2],
                        "num_heads": 2,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "context_dim": CLIP_L_WIDTH,
                        "use_checkpoint": False,
                        "legacy": False,
                    },
                },
                "first_stage_config": autoencoder,
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                    "params": {"version": str(clip_l_folder)},
                },
            },
        }
    }


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte-to-character table every CLIP BPE vocabulary is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_clip_l_folder(folder: Path, bpe_path: Path) -> None:
    """A transformers CLIP folder (config and tokenizer) made from open_clip's BPE file.

    The vocabulary is built the way CLIP builds it (bytes, bytes ending a word, merges, two
    special tokens), so the Hugging Face tokenizer and open_clip's agree token for token.
    """
    merges_text = gzip.decompress(bpe_path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in merges_text[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{bpe_path} gives a vocabulary of {len(vocab)} tokens, expected {VOCAB_SIZE}")

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    tokenizer_config = {**special, "model_max_length": CONTEXT_LENGTH, "do_lower_case": True,
                        "errors": "replace", "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "config.json").write_text(json.dumps(CLIP_L_CONFIG, indent=2))


def register_openclip_arch(open_clip: Any) -> Path:
    """Put the small OpenCLIP architecture where open_clip looks for model configs.

    The WebUI builds the text tower by architecture name, before any extension could register
    one, so the config has to live in open_clip's own config folder of the WebUI's environment.
    """
    configs = Path(open_clip.__file__).parent / "model_configs"
    path = configs / f"{OPEN_CLIP_ARCH}.json"
    path.write_text(json.dumps(OPENCLIP_ARCH_CONFIG, indent=2))
    open_clip.add_model_config(configs)
    return path


@contextmanager
def clip_text_model_from_config() -> Iterator[None]:
    """Build CLIPTextModel from a folder's config alone: the folder holds no weights to load."""
    import transformers

    original = transformers.CLIPTextModel.from_pretrained

    def from_config(path: str, *args: object, **kwargs: object) -> Any:
        return transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(path))

    transformers.CLIPTextModel.from_pretrained = from_config
    try:
        yield
    finally:
        transformers.CLIPTextModel.from_pretrained = original


def randomise_zero_weights(module: Any, torch: Any) -> None:
    """Give the zero-initialised output layers random weights.

    generative-models starts its UNet's output convolutions and projections at zero, so an
    untrained UNet predicts exactly zero noise whatever its input: every model would then give
    the same image, and a refiner switch could never show in a picture.
    """
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() > 1 and not param.any():
                fan_in = param[0].numel()
                param.normal_(0.0, fan_in ** -0.5)


def build_engine(config: Mapping[str, Any], seed: int) -> Any:
    import torch
    from omegaconf import OmegaConf

    if config["model"]["target"].startswith("ldm."):
        from ldm.util import instantiate_from_config
    else:
        from sgm.util import instantiate_from_config

    torch.manual_seed(seed)
    with clip_text_model_from_config():
        engine = instantiate_from_config(OmegaConf.create(dict(config))["model"])
    randomise_zero_weights(engine.model, torch)
    return engine.eval()


def state_dict_for_saving(engine: Any) -> dict[str, Any]:
    return {key: value.detach().clone().contiguous() for key, value in engine.state_dict().items()}


def replace_if_changed(path: Path, write: Callable[[Path], None]) -> None:
    """Leave a file with the same bytes untouched.

    A running WebUI keys its cached checkpoint hashes by modification time: rewriting equal
    files makes it forget them, and a checkpoint chosen as "name [hash]" is then not found.
    """
    fresh = path.with_name(path.name + ".new")
    write(fresh)
    if path.exists() and path.read_bytes() == fresh.read_bytes():
        fresh.unlink()
    else:
        fresh.replace(path)


def save_checkpoint(tensors: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    replace_if_changed(path, lambda out: save_file(dict(tensors), str(out), metadata={"format": "pt"}))
    replace_if_changed(path.with_suffix(".yaml"), lambda out: OmegaConf.save(OmegaConf.create(dict(config)), out))


def lora_for(unet: Any, seed: int, rank: int = 4) -> dict[str, Any]:
    """A LoRA on the UNet's transformer linears, strong enough to change the image visibly."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and "transformer_blocks" in name:
            key = "lora_unet_" + name.replace(".", "_")
            down = torch.randn(rank, module.in_features, generator=generator) / module.in_features ** 0.5
            up = torch.randn(module.out_features, rank, generator=generator) / rank ** 0.5
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.lora_up.weight"] = up
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    return tensors


def textual_inversion_embedding(seed: int, vectors: int = 2) -> dict[str, Any]:
    """SDXL embedding layout: one tensor per text encoder, the width of its token embeddings."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {
        "clip_l": torch.randn(vectors, CLIP_L_WIDTH, generator=generator) * 0.02,
        "clip_g": torch.randn(vectors, OPENCLIP_WIDTH, generator=generator) * 0.02,
    }


def copy_text_encoder(source: Mapping[str, Any], source_prefix: str, target: dict[str, Any], target_prefix: str) -> None:
    for key, value in source.items():
        if key.startswith(source_prefix):
            target_key = target_prefix + key[len(source_prefix):]
            if target[target_key].shape != value.shape:
                raise ValueError(f"{key} {tuple(value.shape)} does not fit {target_key} {tuple(target[target_key].shape)}")
            target[target_key] = value.clone()


def make_all(webui: Path, checkpoints: Path) -> list[Path]:
    repositories = webui / "repositories"
    sys.path[:0] = [str(repositories / "generative-models"), str(repositories / "stable-diffusion-stability-ai")]
    import open_clip

    register_openclip_arch(open_clip)
    models = checkpoints.parent
    clip_l_folder = models / CLIP_L_FOLDER
    write_clip_l_folder(clip_l_folder, Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz")

    vae_dir = models / "VAE"
    checkpoints.mkdir(parents=True, exist_ok=True)
    vae_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    base_cfg = base_config(clip_l_folder)
    base_engine = build_engine(base_cfg, SEED)
    base = state_dict_for_saving(base_engine)
    lora = lora_for(base_engine.model.diffusion_model, SEED + 3)
    del base_engine
    base_path = checkpoints / "tiny-sdxl-base.safetensors"
    save_checkpoint(base, base_cfg, base_path)
    written.append(base_path)

    copy_path = checkpoints / "tiny-sdxl-base-copy.safetensors"
    replace_if_changed(copy_path, lambda out: shutil.copyfile(base_path, out))
    replace_if_changed(copy_path.with_suffix(".yaml"), lambda out: shutil.copyfile(base_path.with_suffix(".yaml"), out))
    written.append(copy_path)

    refiner_cfg = refiner_config()
    own_text = state_dict_for_saving(build_engine(refiner_cfg, SEED + 1))
    shared_text = dict(own_text)
    copy_text_encoder(base, "conditioner.embedders.1.", shared_text, "conditioner.embedders.0.")
    copy_text_encoder(base, "first_stage_model.", shared_text, "first_stage_model.")
    copy_text_encoder(base, "first_stage_model.", own_text, "first_stage_model.")
    for name, tensors in (("tiny-sdxl-refiner", shared_text), ("tiny-sdxl-refiner-own-text", own_text)):
        path = checkpoints / f"{name}.safetensors"
        save_checkpoint(tensors, refiner_cfg, path)
        written.append(path)
    # A file in half precision under --no-half: the WebUI runs in float32, and the refiner UNet
    # built from the half file must compute what a float32 file of the same (rounded) values does.
    half = {key: value.half() if value.is_floating_point() else value for key, value in shared_text.items()}
    rounded = {key: value.float() if value.is_floating_point() else value for key, value in half.items()}
    for name, tensors in (("tiny-sdxl-refiner-fp16", half), ("tiny-sdxl-refiner-rounded", rounded)):
        path = checkpoints / f"{name}.safetensors"
        save_checkpoint(tensors, refiner_cfg, path)
        written.append(path)
    # Checkpoint lists name files below the folder by their relative path, spaces and all.
    spaced_path = checkpoints / "sub folder" / "tiny sdxl refiner.safetensors"
    spaced_path.parent.mkdir(exist_ok=True)
    save_checkpoint(shared_text, refiner_cfg, spaced_path)
    written.append(spaced_path)
    wrong_path = checkpoints / "tiny-sdxl-refiner-wrong-config.safetensors"
    save_checkpoint(shared_text, wrong_config(refiner_cfg), wrong_path)
    written.append(wrong_path)

    sd1_cfg = sd1_config(clip_l_folder)
    sd1_path = checkpoints / "tiny-sd1.safetensors"
    save_checkpoint(state_dict_for_saving(build_engine(sd1_cfg, SEED + 2)), sd1_cfg, sd1_path)
    written.append(sd1_path)

    from safetensors.torch import save_file

    vae_path = vae_dir / "tiny-sdxl-vae.safetensors"
    prefix = "first_stage_model."
    vae = {k[len(prefix):]: v for k, v in base.items() if k.startswith(prefix)}
    replace_if_changed(vae_path, lambda out: save_file(vae, str(out)))
    written.append(vae_path)

    embeddings = webui / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    embedding_path = embeddings / "tiny-sdxl-ti.safetensors"
    embedding = textual_inversion_embedding(SEED + 4)
    replace_if_changed(embedding_path, lambda out: save_file(embedding, str(out)))
    written.append(embedding_path)

    lora_dir = models / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    lora_path = lora_dir / "tiny-sdxl-lora.safetensors"
    replace_if_changed(lora_path, lambda out: save_file(lora, str(out), metadata={"ss_network_module": "networks.lora"}))
    written.append(lora_path)
    return written


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the WebUI's models/Stable-diffusion folder")
    parser.add_argument("--webui", type=Path, default=None,
                        help="the WebUI 1.10.1 folder, with repositories/ (default: two levels above output)")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    webui = (args.webui or output.parent.parent).resolve()
    for path in make_all(webui, output):
        log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
