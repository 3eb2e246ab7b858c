"""Write tiny LoRA files for the live tests' checkpoints, in kohya's key names, which every host loads.

Run it with the host's Python (it needs torch and safetensors only)::

    /path/to/venv/bin/python tests/live/make_tiny_loras.py /path/to/host/models \\
        --base tiny-sdxl-base.safetensors --refiner tiny-sdxl-refiner.safetensors

The layers are read from the checkpoints themselves, so the same script serves the WebUI's tiny
models and Forge's released-layout ones. It writes into ``models/Lora``, leaving a file whose bytes
would not change untouched (the host's cached hashes stay valid):

- ``refiner-test-unet.safetensors``: every linear layer of the base UNet's transformer blocks;
- ``refiner-test-te.safetensors``: other values on the same UNet layers, and on both text
  encoders' MLPs (``lora_te1_`` for CLIP-L, ``lora_te2_`` for OpenCLIP bigG);
- ``refiner-test-refiner-unet.safetensors`` (with ``--refiner``): the refiner-type UNet's
  transformer linears, which no base-type UNet has the shapes for.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

SEED = 20241208
RANK = 2
UNET_PREFIX = "model.diffusion_model."
CLIP_L_LAYER = re.compile(r"conditioner\.embedders\.0\.transformer\.text_model\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.weight")
BIGG_LAYER = re.compile(r"conditioner\.embedders\.1\.model\.transformer\.resblocks\.(\d+)\.mlp\.(c_fc|c_proj)\.weight")
BIGG_TO_KOHYA = {"c_fc": "fc1", "c_proj": "fc2"}


def linear_layers(checkpoint: Path) -> Iterator[tuple[str, tuple[int, int]]]:
    """(LoRA layer name, (out, in)) of each layer a test LoRA patches, in the file's key order."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt", device="cpu") as handle:
        keys = handle.keys()  # a safetensors handle is no mapping: it cannot be iterated itself
        for key in keys:
            shape = tuple(handle.get_slice(key).get_shape())
            if len(shape) != 2:
                continue
            if key.startswith(UNET_PREFIX) and "transformer_blocks" in key and key.endswith(".weight"):
                yield "lora_unet_" + key[len(UNET_PREFIX):-len(".weight")].replace(".", "_"), shape
            elif match := CLIP_L_LAYER.fullmatch(key):
                yield f"lora_te1_text_model_encoder_layers_{match[1]}_mlp_{match[2]}", shape
            elif match := BIGG_LAYER.fullmatch(key):
                yield f"lora_te2_text_model_encoder_layers_{match[1]}_mlp_{BIGG_TO_KOHYA[match[2]]}", shape


def lora(layers: list[tuple[str, tuple[int, int]]], seed: int, strength: float) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_features, in_features) in layers:
        tensors[f"{name}.lora_down.weight"] = torch.randn(RANK, in_features, generator=generator) / in_features ** 0.5
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_features, RANK, generator=generator) * strength
        tensors[f"{name}.alpha"] = torch.tensor(float(RANK))
    return tensors


def write_if_changed(path: Path, tensors: dict) -> bool:
    from safetensors.torch import save_file

    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as handle:
        partial = Path(handle.name)
    save_file(tensors, str(partial), metadata={"ss_network_module": "networks.lora"})
    if path.exists() and path.read_bytes() == partial.read_bytes():
        partial.unlink()
        return False
    partial.chmod(0o644)
    partial.replace(path)
    return True


def make_all(models: Path, base: str, refiner: str | None) -> list[Path]:
    folder = models / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    layers = list(linear_layers(models / "Stable-diffusion" / base))
    unet_layers = [layer for layer in layers if layer[0].startswith("lora_unet_")]
    files = {
        "refiner-test-unet": lora(unet_layers, SEED, 1.0),
        "refiner-test-te": lora(layers, SEED + 1, 1.0),
    }
    if refiner is not None:
        refiner_layers = [layer for layer in linear_layers(models / "Stable-diffusion" / refiner)
                          if layer[0].startswith("lora_unet_")]
        files["refiner-test-refiner-unet"] = lora(refiner_layers, SEED + 2, 1.0)
    written = []
    for name, tensors in files.items():
        path = folder / f"{name}.safetensors"
        write_if_changed(path, tensors)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="the host's models folder (with Stable-diffusion/ in it)")
    parser.add_argument("--base", required=True, help="the base checkpoint's file name")
    parser.add_argument("--refiner", help="a refiner-type checkpoint's file name")
    args = parser.parse_args(argv)
    written = make_all(args.models, args.base, args.refiner)
    print(f"tiny LoRAs: {', '.join(path.name for path in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
