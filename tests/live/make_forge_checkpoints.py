"""Write the smallest SDXL checkpoints that Forge 2 loads, for the Forge live tests and benchmark.

Forge builds the text encoders and the VAE at their released sizes from fixed Hugging Face
configs and loads whatever the file holds into them, so those parts are written at full size,
in the released single-file key layout (the tables in ``../shared/fixtures/``). Its model
detection requires the released UNet's channel count, input-side transformer depths, context and
ADM widths; the channel multipliers, the output-side depths and the middle depth shrink. The UNets
are built by Forge's own ``IntegratedUNet2DConditionModel``, so their keys are the ones Forge reads.

Run it with the Forge host's Python, from anywhere::

    /path/to/venv/bin/python tests/live/make_forge_checkpoints.py /path/to/forge/models/Stable-diffusion \\
        --forge /path/to/forge

It writes, with random weights from a fixed seed (nonzero everywhere, so images are not flat):

- ``tiny-forge-base.safetensors``: a base-type SDXL model in float16 (about 2 GB);
- ``tiny-forge-base-copy.safetensors``: the same bytes under another name;
- ``tiny-forge-refiner.safetensors``: a refiner-type model whose UNet is bfloat16 (another dtype
  than the base's) and whose OpenCLIP bigG encoder and VAE hold the base's tensors, as in the released pair.

A file whose bytes would not change is left untouched (its hash stays cached by Forge).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

SEED = 20251205
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
UNET_PREFIX = "model.diffusion_model."
BASE_BIGG, REFINER_BIGG = "conditioner.embedders.1.model.", "conditioner.embedders.0.model."
VAE = "first_stage_model."
COMMON = {"use_spatial_transformer": True, "num_classes": "sequential", "in_channels": 4,
          "out_channels": 4, "use_linear_in_transformer": True, "num_heads": -1}
BASE_UNET = {**COMMON, "model_channels": 320, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 1, 1],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
             "transformer_depth_middle": 1, "context_dim": 2048, "adm_in_channels": 2816, "num_head_channels": 64}
REFINER_UNET = {**COMMON, "model_channels": 384, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 1, 1, 1],
                "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
                "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                "transformer_depth_middle": 1, "context_dim": 1280, "adm_in_channels": 2560, "num_head_channels": 64}


def forge_on_path(forge: Path) -> None:
    sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend reads its flags when imported
    for folder in (forge, forge / "packages_3rdparty", forge / "repositories" / "huggingface_guess"):
        sys.path.insert(0, str(folder))


def unet_tensors(config: dict, dtype, generator) -> dict:
    """Forge's UNet class, randomised: every weight nonzero (its output layers start at zero)."""
    import torch
    from backend.nn.unet import IntegratedUNet2DConditionModel

    with torch.device("meta"):
        unet = IntegratedUNet2DConditionModel.from_config(config)
    tensors = {}
    for key, meta in unet.state_dict().items():
        value = torch.randn(meta.shape, generator=generator) * 0.02
        if key.endswith("norm.weight") or (".norm" in key and key.endswith(".weight")):
            value = value + 1.0
        tensors[UNET_PREFIX + key] = value.to(dtype).contiguous()
    return tensors


def released_parts(table: str, dtype, generator) -> dict:
    """Every non-UNet tensor of a released checkpoint at its released shape."""
    import torch

    shapes = json.loads((FIXTURES / table).read_text())
    tensors = {}
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX):
            continue
        if key.endswith("position_ids"):
            tensors[key] = torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
            continue
        value = torch.randn(shape, generator=generator) * 0.02
        if (key.endswith(".weight") and ("norm" in key or "ln_" in key)) or key.endswith("logit_scale"):
            value = value + 1.0
        tensors[key] = value.to(dtype).contiguous()
    return tensors


def digest(tensors: dict) -> str:
    hasher = hashlib.sha256()
    for key in sorted(tensors):
        hasher.update(key.encode())
        hasher.update(tensors[key].view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return hasher.hexdigest()


def write_if_changed(path: Path, tensors: dict) -> bool:
    """Writes beside, then renames: a half-written file is never left under the real name."""
    from safetensors.torch import save_file

    stamp = path.with_suffix(".sha256")
    wanted = digest(tensors)
    if path.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return False
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    partial.replace(path)
    stamp.write_text(wanted)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="Forge's models/Stable-diffusion folder")
    parser.add_argument("--forge", type=Path, required=True, help="the Forge folder (for its backend)")
    arguments = parser.parse_args()
    forge_on_path(arguments.forge.resolve())
    import torch

    started = time.monotonic()
    generator = torch.Generator().manual_seed(SEED)
    base = released_parts("checkpoint_sdxl_base.json", torch.float16, generator)
    base.update(unet_tensors(BASE_UNET, torch.float16, generator))
    # the released pair shares the OpenCLIP bigG encoder and the VAE: Forge's built-in refiner, which
    # loads the whole refiner checkpoint, then encodes and decodes as ours does
    refiner = {key: value for key, value in base.items() if key.startswith(VAE)}
    refiner.update({REFINER_BIGG + key[len(BASE_BIGG):]: value for key, value in base.items() if key.startswith(BASE_BIGG)})
    refiner.update(unet_tensors(REFINER_UNET, torch.bfloat16, generator))
    models = arguments.models
    models.mkdir(parents=True, exist_ok=True)
    written = []
    for name, tensors in (("tiny-forge-base.safetensors", base), ("tiny-forge-refiner.safetensors", refiner)):
        if write_if_changed(models / name, tensors):
            written.append(name)
    copy = models / "tiny-forge-base-copy.safetensors"
    if "tiny-forge-base.safetensors" in written or not copy.is_file():
        shutil.copyfile(models / "tiny-forge-base.safetensors", copy)
        written.append(copy.name)
    sizes = {path.name: f"{path.stat().st_size / 2**30:.2f} GiB" for path in sorted(models.glob("tiny-forge-*.safetensors"))}
    print(f"Forge checkpoints in {models}: {sizes}; written: {written or 'none (unchanged)'}; "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
