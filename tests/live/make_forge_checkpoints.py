"""Write the smallest SDXL checkpoints that Forge 2 loads, for the Forge live tests and benchmark.

Forge builds the text encoders and the VAE at their released sizes from fixed Hugging Face
configs and loads whatever the file holds into them (``strict=False``, into uninitialised
memory), so those parts are written at full size, in the released single-file (sgm) key layout
of the shape tables in ``tests/fixtures/``. Its model detection (``huggingface_guess``) requires
the released UNet's channel count, input-side transformer depths, context and ADM widths; the
channel multipliers, the output-side depths and the middle depth shrink. The UNets' keys and
shapes come from Forge's own ``IntegratedUNet2DConditionModel``, built on the meta device.

Run it with the Forge host's Python, from anywhere::

    /path/to/venv/bin/python tests/live/make_forge_checkpoints.py /path/to/forge/models/Stable-diffusion \\
        --forge /path/to/forge

It writes, with random weights from a fixed seed (nonzero everywhere, scaled by fan-in so that
the UNet's output depends on its input and images are neither flat nor infinite):

- ``tiny-forge-base.safetensors``: a base-type SDXL model in float16 (about 2.1 GB);
- ``tiny-forge-base-copy.safetensors``: the same bytes under another name (a real copy);
- ``tiny-forge-refiner.safetensors``: a refiner-type model whose UNet is bfloat16 (another dtype
  than the base's) and whose OpenCLIP bigG encoder and VAE are the base's float16 tensors, as in
  the released pair (about 1.9 GB);
- ``tiny-forge-refiner-own-text.safetensors``: that refiner with an OpenCLIP bigG of its own
  (drawn last, so the other files' bytes do not depend on it).

Reruns are fast and leave the files alone: a stamp of the recipe (this script, the shape tables,
Forge's UNet source, torch's version) skips the work when nothing changed, and a regenerated file
whose bytes equal the old one's is not replaced, so Forge's cached hashes stay valid.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

SEED = 20251205
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # the released shape tables, in this checkout
BASE, COPY, REFINER = "tiny-forge-base.safetensors", "tiny-forge-base-copy.safetensors", "tiny-forge-refiner.safetensors"
OWN_TEXT = "tiny-forge-refiner-own-text.safetensors"
FINETUNE = "tiny-forge-base-finetune.safetensors"
NAMES = (BASE, COPY, REFINER, OWN_TEXT, FINETUNE)
STAMP = "tiny-forge-checkpoints.json"
UNET_PREFIX = "model.diffusion_model."
BASE_BIGG, REFINER_BIGG = "conditioner.embedders.1.model.", "conditioner.embedders.0.model."
VAE = "first_stage_model."
COMMON = {"use_spatial_transformer": True, "num_classes": "sequential", "in_channels": 4,
          "out_channels": 4, "use_linear_in_transformer": True, "num_heads": -1, "num_head_channels": 64,
          "transformer_depth_middle": 1}
# What huggingface_guess's SDXL entry checks is kept (320, [0,0,2,2,10,10], 2048, 2816); the
# levels are one channel width, and the output side holds one transformer where the input has any.
BASE_UNET = {**COMMON, "model_channels": 320, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 1, 1],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1],
             "context_dim": 2048, "adm_in_channels": 2816}
# The same for its SDXLRefiner entry: 384, [0,0,4,4,4,4,0,0], 1280, 2560.
REFINER_UNET = {**COMMON, "model_channels": 384, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 1, 1, 1],
                "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
                "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                "context_dim": 1280, "adm_in_channels": 2560}

Shapes = dict[str, tuple[int, ...]]


def forge_on_path(forge: Path) -> None:
    """``backend`` and ``huggingface_guess`` import from the Forge folder; its backend parses
    ``sys.argv`` when imported, so it sees the flag the host starts with instead of ours."""
    sys.argv = [sys.argv[0], "--always-cpu", "--cpu"]  # Forge 2's flag and Neo's; each ignores the other
    for folder in (forge, forge / "packages_3rdparty", forge / "repositories" / "huggingface_guess"):
        sys.path.insert(0, str(folder))


def recipe_stamp(forge: Path) -> str:
    """Everything the bytes depend on; equal stamps mean the files need not be made again."""
    import torch

    hasher = hashlib.sha256()
    for source in (Path(__file__), FIXTURES / "checkpoint_sdxl_base.json", FIXTURES / "checkpoint_sdxl_refiner.json",
                   forge / "backend" / "nn" / "unet.py"):
        hasher.update(source.read_bytes())
    hasher.update(torch.__version__.encode())
    return hasher.hexdigest()


def unet_shapes(config: dict[str, Any]) -> Shapes:
    """The keys and shapes Forge's loader expects, from Forge's UNet class (no memory used)."""
    import torch
    from backend.nn.unet import IntegratedUNet2DConditionModel

    with torch.device("meta"):
        unet = IntegratedUNet2DConditionModel.from_config(config)
    return {UNET_PREFIX + key: tuple(value.shape) for key, value in unet.state_dict().items()}


def released_shapes(table: str, prefixes: tuple[str, ...]) -> Shapes:
    """The released checkpoint's tensors under ``prefixes``, at their released shapes."""
    shapes = json.loads((FIXTURES / table).read_text())
    return {key: tuple(shape) for key, shape in shapes.items() if key.startswith(prefixes)}


def random_tensor(key: str, shape: tuple[int, ...], generator: Any) -> Any:
    """Nonzero everywhere (the released classes start output layers at zero, which makes the UNet
    output zero and images flat). Matrices and kernels get 1/sqrt(fan-in) so activations keep
    their scale through dozens of blocks; 1-D weights are the norms' and stay near one."""
    import torch

    if key.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    noise = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        return noise / math.sqrt(math.prod(shape[1:]))
    if key.endswith(".weight") or key.endswith("logit_scale"):
        return 1.0 + 0.1 * noise
    return 0.02 * noise


def random_tensors(shapes: Shapes, dtype: Any, generator: Any) -> dict[str, Any]:
    """Drawn in sorted key order, so the values do not depend on a table's order."""
    tensors = {}
    for key in sorted(shapes):
        value = random_tensor(key, shapes[key], generator)
        tensors[key] = value if not value.is_floating_point() else value.to(dtype).contiguous()
    return tensors


def base_checkpoint(generator: Any) -> dict[str, Any]:
    """Full-size CLIP-L, OpenCLIP bigG and VAE with the small base UNet, all float16."""
    import torch

    parts = released_shapes("checkpoint_sdxl_base.json", ("conditioner.", VAE))
    return random_tensors({**parts, **unet_shapes(BASE_UNET)}, torch.float16, generator)


def refiner_checkpoint(base: dict[str, Any], generator: Any) -> dict[str, Any]:
    """The base's bigG and VAE tensors under the released refiner's keys, and its own bfloat16 UNet:
    Forge's built-in refiner loads this whole file, and both models must encode and decode alike."""
    import torch

    wanted = released_shapes("checkpoint_sdxl_refiner.json", ("conditioner.", VAE))
    shared = {REFINER_BIGG + key[len(BASE_BIGG):]: value for key, value in base.items() if key.startswith(BASE_BIGG)}
    shared.update({key: value for key, value in base.items() if key.startswith(VAE)})
    if set(shared) != set(wanted):
        raise ValueError(f"the refiner's text encoder and VAE keys differ from the base's: "
                         f"{sorted(set(shared) ^ set(wanted))[:8]}")
    return {**shared, **random_tensors(unet_shapes(REFINER_UNET), torch.bfloat16, generator)}


def with_own_text_encoder(refiner: dict[str, Any], generator: Any) -> dict[str, Any]:
    """The refiner with a bigG of its own: Forge's built-in refiner then encodes with it, and ours must too."""
    import torch

    own = {key: tuple(value.shape) for key, value in refiner.items() if key.startswith(REFINER_BIGG)}
    return {**refiner, **random_tensors(own, torch.float16, generator)}


def fine_tuned(base: dict[str, Any], generator: Any) -> dict[str, Any]:
    """A base-type model with the base's text encoders and VAE and a UNet of its own, as users take
    an SDXL fine-tune for the refiner; Forge Neo's built-in refiner can load it (not a refiner-type one)."""
    import torch

    unet = {key: tuple(value.shape) for key, value in base.items() if key.startswith(UNET_PREFIX)}
    return {**base, **random_tensors(unet, torch.float16, generator)}


def replace_unless_same(partial: Path, path: Path) -> bool:
    """Keeps an existing file whose bytes are equal (its mtime, and so Forge's hash cache, too)."""
    if path.is_file() and filecmp.cmp(partial, path, shallow=False):
        partial.unlink()
        return False
    partial.replace(path)
    return True


def write(path: Path, tensors: dict[str, Any]) -> bool:
    """Written beside, then renamed: a half-written file is never left under the real name."""
    from safetensors.torch import save_file

    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    return replace_unless_same(partial, path)


def copy(source: Path, path: Path) -> bool:
    """A byte copy, not a link: Forge must see two files with one hash."""
    partial = path.with_name(path.name + ".partial")
    shutil.copyfile(source, partial)
    return replace_unless_same(partial, path)


def up_to_date(models: Path, stamp: str) -> bool:
    """The recipe is unchanged and every file is there at the size it was written with."""
    try:
        recorded = json.loads((models / STAMP).read_text())
    except (OSError, ValueError):
        return False
    sizes = recorded.get("sizes", {})
    return recorded.get("stamp") == stamp and all(
        (models / name).is_file() and (models / name).stat().st_size == sizes.get(name) for name in NAMES)


def make(models: Path, stamp: str) -> list[str]:
    """Makes the five files; returns the names whose bytes changed."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    base = base_checkpoint(generator)
    refiner = refiner_checkpoint(base, generator)
    written = [name for name, tensors in ((BASE, base), (REFINER, refiner)) if write(models / name, tensors)]
    if write(models / OWN_TEXT, with_own_text_encoder(refiner, generator)):
        written.append(OWN_TEXT)
    del refiner
    if write(models / FINETUNE, fine_tuned(base, generator)):
        written.append(FINETUNE)
    del base
    if copy(models / BASE, models / COPY):
        written.append(COPY)
    sizes = {name: (models / name).stat().st_size for name in NAMES}
    (models / STAMP).write_text(json.dumps({"stamp": stamp, "seed": SEED, "sizes": sizes}, indent=1))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="Forge's models/Stable-diffusion folder")
    parser.add_argument("--forge", type=Path, required=True, help="the Forge folder (for its backend)")
    arguments = parser.parse_args()
    forge = arguments.forge.resolve()
    forge_on_path(forge)
    started = time.monotonic()
    models = arguments.models
    models.mkdir(parents=True, exist_ok=True)
    stamp = recipe_stamp(forge)
    written = [] if up_to_date(models, stamp) else make(models, stamp)
    sizes = {name: f"{(models / name).stat().st_size / 2**30:.2f} GiB" for name in NAMES}
    print(f"Forge checkpoints in {models}: {sizes}; written: {', '.join(written) or 'none (unchanged)'}; "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
