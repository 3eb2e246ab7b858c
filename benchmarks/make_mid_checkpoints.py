"""Writes a mid-size SDXL base and refiner (over 1 GB each) into a WebUI 1.10.1 built by tests/live/host.py.

The tiny checkpoints of the live tests read in a blink and sample in a fraction of a second, so
they cannot show what a first use costs. These are the tiny ones' configs with wider UNets, made
with the WebUI's own classes: a step takes about a second on 2 cores at 256², and each file is
large enough that reading it from disk is seconds. The refiner shares the base's OpenCLIP encoder,
as the released pair does. Run it with the host's Python (it needs the WebUI's ``sgm``):

    /var/tmp/sdxl-refiner-tests/webui-host/venv/bin/python benchmarks/make_mid_checkpoints.py \\
        /var/tmp/sdxl-refiner-tests/webui-host/webui-1.10.1/models/Stable-diffusion
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live import make_tiny_checkpoints as tiny

MID_BASE = "mid-sdxl-base.safetensors"
MID_REFINER = "mid-sdxl-refiner.safetensors"
MODEL_CHANNELS = 320
TRANSFORMER_DEPTH = 6


def widened(config: dict, transformer_depth: int | list[int]) -> dict:
    network = config["model"]["params"]["network_config"]["params"]
    network["model_channels"] = MODEL_CHANNELS
    network["transformer_depth"] = transformer_depth
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the WebUI's models/Stable-diffusion folder")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    webui = output.parent.parent
    repositories = webui / "repositories"
    sys.path[:0] = [str(repositories / "generative-models"), str(repositories / "stable-diffusion-stability-ai")]
    import open_clip

    tiny.register_openclip_arch(open_clip)
    clip_l_folder = output.parent / tiny.CLIP_L_FOLDER
    base_config = widened(tiny.base_config(clip_l_folder), [1, TRANSFORMER_DEPTH])
    base = tiny.state_dict_for_saving(tiny.build_engine(base_config, tiny.SEED + 10))
    tiny.save_checkpoint(base, base_config, output / MID_BASE)
    refiner_config = widened(tiny.refiner_config(), TRANSFORMER_DEPTH)
    refiner = tiny.state_dict_for_saving(tiny.build_engine(refiner_config, tiny.SEED + 11))
    tiny.copy_text_encoder(base, "conditioner.embedders.1.", refiner, "conditioner.embedders.0.")
    tiny.copy_text_encoder(base, "first_stage_model.", refiner, "first_stage_model.")
    tiny.save_checkpoint(refiner, refiner_config, output / MID_REFINER)
    for name in (MID_BASE, MID_REFINER):
        print(f"wrote {output / name} ({(output / name).stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
