"""Stand-in of ``sgm.models.diffusion.DiffusionEngine`` with what the WebUI 1.10.1 adds to it.

The WebUI patches ``get_learned_conditioning`` / ``apply_model`` onto sgm's class and sets
``is_sdxl``, ``alphas_cumprod``, ``parameterization``, ``cond_stage_key``, ``lowvram`` and more
when it loads a model; here they are part of the class. ``save_engine`` / ``load_engine`` write
and read real safetensors files in the SDXL key layout; ``load_engine`` builds the UNet from a
config file's ``network_config``, as the WebUI builds every model from its config.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from modules import devices, shared
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file
from sgm.modules.diffusionmodules.openaimodel import UNetModel
from sgm.modules.diffusionmodules.wrappers import OpenAIWrapper
from sgm.modules.encoders.modules import (
    ConcatTimestepEmbedderND,
    FrozenCLIPEmbedder,
    FrozenOpenCLIPEmbedder2,
    GeneralConditioner,
)
from torch import nn


class FirstStage(nn.Module):
    """A fixed 8x down/up-sampling "VAE"; encode samples the posterior from the global RNG, as sgm does."""

    def __init__(self, latent_channels: int = 4):
        super().__init__()
        self.encoder = nn.Conv2d(3, latent_channels, 8, stride=8)
        self.decoder = nn.ConvTranspose2d(latent_channels, 3, 8, stride=8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.encoder(x)
        return mean + 0.01 * torch.randn_like(mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def legacy_ddpm_alphas_cumprod(linear_start: float = 0.00085, linear_end: float = 0.012, steps: int = 1000) -> torch.Tensor:
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class DiffusionEngine(nn.Module):
    def __init__(self, unet: nn.Module, conditioner: GeneralConditioner, first_stage_model: nn.Module | None = None):
        super().__init__()
        self.model = OpenAIWrapper(unet)
        self.conditioner = conditioner
        self.first_stage_model = first_stage_model or FirstStage()
        self.model.conditioning_key = 'crossattn'
        self.model.diffusion_model.dtype = devices.dtype_unet
        self.cond_stage_key = 'txt'
        self.parameterization = 'eps'
        self.register_buffer("alphas_cumprod", legacy_ddpm_alphas_cumprod(), persistent=False)
        self.is_sdxl = True
        self.is_sdxl_inpaint = False
        self.is_sd1 = False
        self.is_sd2 = False
        self.is_ssd = False
        self.is_sd3 = False
        self.latent_channels = 4
        self.lowvram = False
        self.sd_checkpoint_info = None
        self.sd_model_hash = None
        self.sd_model_checkpoint = None
        self.cond_stage_model_empty_prompt = None

    def get_learned_conditioning(self, batch):
        for embedder in self.conditioner.embedders:
            embedder.ucg_rate = 0.0

        width = getattr(batch, 'width', 1024) or 1024
        height = getattr(batch, 'height', 1024) or 1024
        is_negative_prompt = getattr(batch, 'is_negative_prompt', False)
        aesthetic_score = shared.opts.sdxl_refiner_low_aesthetic_score if is_negative_prompt else shared.opts.sdxl_refiner_high_aesthetic_score

        devices_args = dict(device=devices.device, dtype=devices.dtype)
        sdxl_conds = {
            "txt": batch,
            "original_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
            "crop_coords_top_left": torch.tensor([shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left], **devices_args).repeat(len(batch), 1),
            "target_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
            "aesthetic_score": torch.tensor([aesthetic_score], **devices_args).repeat(len(batch), 1),
        }

        force_zero_negative_prompt = is_negative_prompt and all(x == '' for x in batch)
        return self.conditioner(sdxl_conds, force_zero_embeddings=['txt'] if force_zero_negative_prompt else [])

    def apply_model(self, x, t, cond):
        return self.model(x, t, cond)

    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x)

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z)

    def get_first_stage_encoding(self, x):
        return x

    def ema_scope(self, context=None):
        return contextlib.nullcontext()


@dataclass(frozen=True)
class TinySdxlWidths:
    """Widths of a miniature SDXL pair; the relations between them are SDXL's.

    The head widths are not the family's 64 and differ between base and refiner: the weights do
    not carry them, so only a UNet built from the model's config gets them right.
    """

    clip_l: int = 32
    clip_g: int = 64
    scalar_embed: int = 8
    model_channels: int = 32
    vocab: int = 512
    base_head_channels: int = 16
    refiner_head_channels: int = 32

    def unet_params(self, kind: str) -> dict:
        context = self.clip_g if kind == "refiner" else self.clip_l + self.clip_g
        scalars = 5 if kind == "refiner" else 6
        return dict(
            in_channels=4, out_channels=4, model_channels=self.model_channels, num_res_blocks=1,
            attention_resolutions=[2], channel_mult=[1, 2],
            num_head_channels=self.refiner_head_channels if kind == "refiner" else self.base_head_channels,
            transformer_depth=[0, 1], transformer_depth_middle=1, context_dim=context,
            adm_in_channels=self.clip_g + scalars * self.scalar_embed, num_classes="sequential",
            use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
            use_checkpoint=True, spatial_transformer_attn_type="softmax-xformers",
        )


def build_conditioner(kind: str, clip_l: int, clip_g: int, scalar_embed: int, vocab: int = 512) -> GeneralConditioner:
    if kind == "refiner":
        return GeneralConditioner([
            FrozenOpenCLIPEmbedder2(clip_g, vocab),
            ConcatTimestepEmbedderND(scalar_embed, "original_size_as_tuple"),
            ConcatTimestepEmbedderND(scalar_embed, "crop_coords_top_left"),
            ConcatTimestepEmbedderND(scalar_embed, "aesthetic_score"),
        ])
    return GeneralConditioner([
        FrozenCLIPEmbedder(clip_l, vocab),
        FrozenOpenCLIPEmbedder2(clip_g, vocab),
        ConcatTimestepEmbedderND(scalar_embed, "original_size_as_tuple"),
        ConcatTimestepEmbedderND(scalar_embed, "crop_coords_top_left"),
        ConcatTimestepEmbedderND(scalar_embed, "target_size_as_tuple"),
    ])


def second_text_encoder(engine: DiffusionEngine) -> FrozenOpenCLIPEmbedder2:
    """The OpenCLIP ViT-bigG stand-in: embedder 1 of a base, embedder 0 of a refiner."""
    return next(e for e in engine.conditioner.embedders if isinstance(e, FrozenOpenCLIPEmbedder2))


def build_engine(
    kind: str = "base", widths: TinySdxlWidths = TinySdxlWidths(), seed: int = 0,
    text_encoder_of: DiffusionEngine | None = None,
) -> DiffusionEngine:
    """A new miniature SDXL base or refiner with weights drawn from ``seed`` (the global RNG is untouched).

    ``text_encoder_of``: copy that model's second text encoder, as the released pair shares it.
    """
    params = widths.unet_params(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModel(**params)
        for parameter in unet.parameters():
            parameter.data.normal_(0.0, 0.05)
        conditioner = build_conditioner(kind, widths.clip_l, widths.clip_g, widths.scalar_embed, widths.vocab)
        engine = DiffusionEngine(unet, conditioner)
    engine.network_params = params
    if text_encoder_of is not None:
        second_text_encoder(engine).load_state_dict(second_text_encoder(text_encoder_of).state_dict())
    return engine.eval().requires_grad_(False)


def save_engine(engine: DiffusionEngine, path) -> None:
    """Writes the checkpoint layout (without the ``wrapped`` steps the WebUI's hijack adds)."""
    state = {key.replace(".wrapped.", "."): value.detach().contiguous() for key, value in engine.state_dict().items()}
    save_file(state, str(path))


def engine_config(network_params: dict) -> dict:
    """A model config as the WebUI reads one (only what the stand-in builds from it)."""
    return {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": {"network_config": {
        "target": "sgm.modules.diffusionmodules.openaimodel.UNetModel", "params": dict(network_params)}}}}


def write_config(network_params: dict, path) -> None:
    OmegaConf.save(OmegaConf.create(engine_config(network_params)), str(path))


def read_state(path) -> dict:
    with safe_open(str(path), framework="pt") as file:
        return {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open is not iterable


def load_engine(state: dict, config_path) -> DiffusionEngine:
    """Builds the model from the config file and loads every tensor of the checkpoint into it
    (strictly, as the WebUI does: a UNet that does not fit its config fails here)."""
    config = OmegaConf.load(str(config_path))
    params = OmegaConf.to_container(config.model.params.network_config.params, resolve=True)
    unet = UNetModel(**params)
    adm = params["adm_in_channels"]
    if "conditioner.embedders.1.model.ln_final.weight" in state:
        kind, clip_l = "base", state["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"].shape[0]
        clip_g = state["conditioner.embedders.1.model.ln_final.weight"].shape[0]
        vocab = state["conditioner.embedders.1.model.token_embedding.weight"].shape[0]
        scalar_embed = (adm - clip_g) // 6
    else:
        kind, clip_l = "refiner", 0
        clip_g = state["conditioner.embedders.0.model.ln_final.weight"].shape[0]
        vocab = state["conditioner.embedders.0.model.token_embedding.weight"].shape[0]
        scalar_embed = (adm - clip_g) // 5
    engine = DiffusionEngine(unet, build_conditioner(kind, clip_l, clip_g, scalar_embed, vocab))
    engine.load_state_dict(state, strict=True)
    engine.network_params = params
    return engine.eval().requires_grad_(False)
