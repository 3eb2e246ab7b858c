"""Reading a refiner UNet from a multi-GB SDXL-layout file: bytes read, speed and memory, as ratios.

    python benchmarks/bench_checkpoint.py [--unet-gb 2.0] [--dir /tmp]

Writes a synthetic checkpoint (the refiner's UNet layout at a reduced width, plus text-encoder and
VAE tensors on both sides of it in the file), then runs each measurement in a fresh process:

- bytes read / UNet bytes: ``read_bytes`` of ``/proc/self/io`` (bytes the process made the
  storage layer fetch) while loading, with the file's pages evicted first (posix_fadvise
  DONTNEED, so the page cache of other processes is left alone). Target <= 1.01.
- load speed / raw sequential read speed: ``read_unet_state_dict`` against ``readinto`` of the same
  byte range into new memory (what any load must do), cold (evicted) and warm (page cache);
  against a reused buffer (pure I/O, no page faults) for information. Target >= 0.9.
- peak RSS growth / UNet bytes: VmHWM during the load minus VmRSS before it. Target <= 1.1.

The file is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNET_PREFIX = "model.diffusion_model."


def proc_value(path: str, field: str) -> int:
    with open(path) as stats:
        for line in stats:
            if line.startswith(field + ":") or line.startswith(field + " "):
                return int(line.split()[1])
    raise KeyError(field)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def unet_range(path: Path) -> tuple[int, int, int]:
    """(first byte, end byte, UNet bytes) of the UNet tensors in the file."""
    from sdxl_refiner.core.checkpoint import read_safetensors_header

    with path.open("rb") as file:
        data_start = 8 + int.from_bytes(file.read(8), "little")
    entries = [e for key, e in read_safetensors_header(path).items() if key.startswith(UNET_PREFIX)]
    start = data_start + min(e.start for e in entries)
    end = data_start + max(e.end for e in entries)
    return start, end, sum(e.end - e.start for e in entries)


def child(mode: str, path: Path, cold: bool, dtype_name: str) -> dict:
    import torch

    from sdxl_refiner.core.checkpoint import load_unet, read_unet_state_dict
    from tests.support.sgm_unet import SgmUNet

    start, end, unet_bytes = unet_range(path)
    if cold:
        evict(path)
    rss_before = proc_value("/proc/self/status", "VmRSS") * 1024
    read_before = proc_value("/proc/self/io", "read_bytes")
    began = time.perf_counter()
    if mode in ("raw", "raw_new_memory"):
        # raw: one reused 64 MiB buffer (pure I/O); raw_new_memory: the bytes land in new memory,
        # as they must in any load, paying its first-touch page faults.
        chunk = 64 * 2**20
        if mode == "raw":
            buffer = memoryview(bytearray(chunk))
        else:
            buffer = memoryview(torch.empty(end - start, dtype=torch.uint8).numpy())
        with path.open("rb", buffering=0) as file:
            file.seek(start)
            done = 0
            while done < end - start:
                size = min(chunk, end - start - done)
                window = buffer[:size] if mode == "raw" else buffer[done : done + size]
                got = file.readinto(window)
                if not got:
                    raise EOFError(path)
                done += got
    elif mode == "read":
        state = read_unet_state_dict(path, getattr(torch, dtype_name))
        del state
    elif mode == "load_unet":
        unet = load_unet(path, lambda params: SgmUNet(**params), getattr(torch, dtype_name))
        del unet
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "read_bytes": proc_value("/proc/self/io", "read_bytes") - read_before,
        "peak_rss_growth": proc_value("/proc/self/status", "VmHWM") * 1024 - rss_before,
        "unet_bytes": unet_bytes,
    }


def run_child(mode: str, path: Path, *, cold: bool, dtype: str = "float16") -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), "--dtype", dtype]
        + (["--cold"] if cold else []),
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def write_synthetic(path: Path, unet_gb: float) -> None:
    import torch

    from tests.support.checkpoints import write_filled_checkpoint
    from tests.support.sgm_unet import SgmUNet

    # The refiner's layout; width scaled so the UNet has about unet_gb of fp16 weights.
    refiner_params = dict(
        adm_in_channels=2560,
        num_classes="sequential",
        in_channels=4,
        out_channels=4,
        model_channels=384,
        attention_resolutions=[4, 2],
        num_res_blocks=2,
        channel_mult=[1, 2, 4, 4],
        num_head_channels=64,
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=4,
        context_dim=1280,
        legacy=False,
    )

    def unet_shapes(channels: int) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            unet = SgmUNet(**{**refiner_params, "model_channels": channels})
        return {UNET_PREFIX + key: tuple(value.shape) for key, value in unet.state_dict().items()}

    def fp16_bytes(shapes: dict) -> int:
        return 2 * sum(math.prod(shape) for shape in shapes.values())

    candidates = [unet_shapes(channels) for channels in range(64, 385, 64)]
    shapes = min(candidates, key=lambda s: abs(fp16_bytes(s) - unet_gb * 1e9))
    unet_elements = sum(math.prod(shape) for shape in shapes.values())
    # Text encoder and VAE: about a third of the UNet, as in the released refiner file.
    side = int(math.sqrt(unet_elements / 3 / 2))
    shapes["conditioner.embedders.0.model.ln_final.weight"] = (1280,)
    shapes["conditioner.embedders.0.model.token_embedding.weight"] = (side, side)
    shapes["first_stage_model.decoder.conv_in.weight"] = (512, 4, 3, 3)
    shapes["zz_extra.weight"] = (side, side)
    write_filled_checkpoint(path, shapes, torch.float16)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--unet-gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts")
    parser.add_argument(
        "--dir", default=None, help="where to write the synthetic file (default: system temp)"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.cold, args.dtype)))
        return

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_checkpoint_") as folder:
        path = Path(folder) / "synthetic_refiner.safetensors"
        began = time.perf_counter()
        write_synthetic(path, args.unet_gb)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        unet_bytes = unet_range(path)[2]
        print(
            f"file {path.stat().st_size / 1e9:.2f} GB, UNet {unet_bytes / 1e9:.2f} GB "
            f"(written in {time.perf_counter() - began:.0f} s)"
        )
        results = {}
        for label, mode, cold, dtype in [
            ("raw cold", "raw", True, "float16"),
            ("raw new memory cold", "raw_new_memory", True, "float16"),
            ("read cold", "read", True, "float16"),
            ("raw warm", "raw", False, "float16"),
            ("raw new memory warm", "raw_new_memory", False, "float16"),
            ("read warm", "read", False, "float16"),
            ("read warm fp16->fp32", "read", False, "float32"),
            ("load_unet warm", "load_unet", False, "float16"),
        ]:
            # Best of several runs: the machine may be shared, and noise only ever adds time.
            runs = [run_child(mode, path, cold=cold, dtype=dtype) for _ in range(args.repeat)]
            results[label] = r = min(runs, key=lambda run: run["seconds"])
            print(
                f"  {label:24s} {r['seconds']:6.2f} s  {unet_bytes / r['seconds'] / 1e9:5.2f} GB/s  "
                f"read {r['read_bytes'] / 1e9:5.2f} GB  peak RSS +{r['peak_rss_growth'] / 1e9:5.2f} GB"
            )
    cold, warm = results["read cold"], results["read warm"]
    ratios = {
        "bytes read / UNet bytes (cold)": (cold["read_bytes"] / unet_bytes, "<= 1.01"),
        "load speed / raw read into new memory (cold)": (
            results["raw new memory cold"]["seconds"] / cold["seconds"],
            ">= 0.9",
        ),
        "load speed / raw read into new memory (warm)": (
            results["raw new memory warm"]["seconds"] / warm["seconds"],
            ">= 0.9",
        ),
        "load speed / raw read, reused buffer (cold)": (
            results["raw cold"]["seconds"] / cold["seconds"],
            "info",
        ),
        "load speed / raw read, reused buffer (warm)": (
            results["raw warm"]["seconds"] / warm["seconds"],
            "info",
        ),
        "peak RSS growth / UNet bytes": (cold["peak_rss_growth"] / unet_bytes, "<= 1.1"),
        "peak RSS growth / output bytes (fp16->fp32)": (
            results["read warm fp16->fp32"]["peak_rss_growth"] / (2 * unet_bytes),
            "<= 1.1",
        ),
        "load_unet time / read time (warm)": (results["load_unet warm"]["seconds"] / warm["seconds"], "~1"),
    }
    for name, (value, target) in ratios.items():
        print(f"{name:45s} {value:6.3f}   target {target}")


if __name__ == "__main__":
    main()
