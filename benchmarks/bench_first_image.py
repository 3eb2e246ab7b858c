"""The first refined image of a refiner new to the host and to the machine, against a warm one, through a running host (WEBUI_URL).

Each round makes the refiner new: a hard link to it under a new name (the host's hash cache keys a
checkpoint by its name, and the refiner's UNet cache by its path), its pages dropped from the page
cache with ``posix_fadvise(DONTNEED)``, which needs no root. Then, of the same seed: a base-only
image, the first refined image, and a warm refined image. Reports the medians and, as ratios
within the run, first / warm, the time before the first step of the first refined image against
base-only (from the progress API), and the bytes the host read from storage during the first
refined image (``/proc/WEBUI_PID/io``) against the file's size. Needs checkpoints of at least 1 GB
to mean anything (``benchmarks/make_mid_checkpoints.py`` writes a pair for the WebUI; Forge's test
checkpoints are 2 GB). ``--read-mbps`` caps the host's reads from the disk (a cgroup v1 ``blkio``
throttle; root), to see a slower disk than the machine's own.

    python -m tests.live.host run -- python benchmarks/bench_first_image.py \\
        --base mid-sdxl-base.safetensors --refiner mid-sdxl-refiner.safetensors
    python -m tests.live.host run --forge -- python benchmarks/bench_first_image.py --size 512 --steps 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live.hash_probe import checkpoint_file
from tests.live.webui_api import FORGE_BASE, FORGE_REFINER, WebUIApi, infotext, ours


def evict(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


@contextmanager
def new_refiner(api: WebUIApi, source: Path, round_index: int) -> Iterator[Path]:
    link = source.with_name(f"first-use-{os.getpid()}-{round_index}-{source.name}")
    os.link(source, link)
    if source.with_suffix(".yaml").exists():
        shutil.copyfile(source.with_suffix(".yaml"), link.with_suffix(".yaml"))
    try:
        api.call("/sdapi/v1/refresh-checkpoints", {})
        evict(link)
        yield link
    finally:
        link.unlink()
        link.with_suffix(".yaml").unlink(missing_ok=True)
        api.call("/sdapi/v1/refresh-checkpoints", {})


def throttle_reads(pid: str, file: Path, megabytes_per_s: float) -> None:
    """Moves the host's process into a blkio cgroup that caps its reads from the file's disk."""
    group = Path("/sys/fs/cgroup/blkio") / f"sdxl-refiner-bench-{os.getpid()}"
    group.mkdir(exist_ok=True)
    device = os.stat(file).st_dev
    (group / "blkio.throttle.read_bps_device").write_text(
        f"{os.major(device)}:{os.minor(device)} {int(megabytes_per_s * 1e6)}")
    (group / "cgroup.procs").write_text(pid)


def storage_bytes_read(pid: str | None) -> int:
    if not pid:
        return 0
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


class FirstStep:
    """When the host's progress first shows a finished sampling step, polled every few ms."""

    def __init__(self, api: WebUIApi):
        self.api = api
        self.at: float | None = None
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(0.02) and self.at is None:
            state = self.api.call("/sdapi/v1/progress?skip_current_image=true").get("state", {})
            if state.get("sampling_step", 0) >= 1:
                self.at = time.perf_counter()

    @contextmanager
    def watching(self) -> Iterator[None]:
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


def timed(api: WebUIApi, fields: dict, pid: str | None) -> tuple[float, float | None, int, dict]:
    """Wall time, time to the first finished step, storage bytes read, response."""
    watch = FirstStep(api)
    read_before = storage_bytes_read(pid)
    started = time.perf_counter()
    with watch.watching():
        response = api.txt2img(**fields)
    ended = time.perf_counter()
    first_step = None if watch.at is None else watch.at - started
    return ended - started, first_step, storage_bytes_read(pid) - read_before, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=FORGE_BASE)
    parser.add_argument("--refiner", default=FORGE_REFINER)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--percent", type=float, default=20.0)
    parser.add_argument("--read-mbps", type=float, default=None, help="cap the host's disk reads (root)")
    args = parser.parse_args()
    api = WebUIApi(os.environ.get("WEBUI_URL", "http://127.0.0.1:7860"))
    pid = os.environ.get("WEBUI_PID")
    source = checkpoint_file(api, args.refiner)
    size = source.stat().st_size
    common = {"steps": args.steps, "width": args.size, "height": args.size, "seed": 1234,
              "override_settings": {"sd_model_checkpoint": args.base}}
    if args.read_mbps:
        throttle_reads(pid, source, args.read_mbps)
    print(f"{args.rounds} rounds; base {args.base}, refiner {args.refiner} ({size / 1e9:.2f} GB); {args.size}², "
          f"{args.steps} steps, refiner {args.percent:g} %; host pid {pid or 'unknown: no bytes read'}"
          + (f"; disk reads capped at {args.read_mbps:g} MB/s" if args.read_mbps else ""))
    api.txt2img(**common)  # the base loaded and warm
    rows: dict[str, list] = {"base only": [], "first refined": [], "warm refined": []}
    first_steps: dict[str, list] = {"base only": [], "first refined": []}
    read_ratios: list[float] = []
    for index in range(args.rounds):
        wall, step, _, _ = timed(api, common, pid)
        rows["base only"].append(wall)
        first_steps["base only"].append(step)
        with new_refiner(api, source, index) as link:
            fields = {**common, "alwayson_scripts": {"sdxl refiner": {"args": [ours(link.name, args.percent)]}}}
            wall, step, read, response = timed(api, fields, pid)
            assert "SDXL Refiner split" in infotext(response), infotext(response)
            rows["first refined"].append(wall)
            first_steps["first refined"].append(step)
            read_ratios.append(read / size)
            wall, _, _, _ = timed(api, fields, pid)
            rows["warm refined"].append(wall)
        print(f"round {index + 1}: " + ", ".join(f"{mode} {values[-1]:.2f} s" for mode, values in rows.items())
              + f"; first step after {first_steps['first refined'][-1]:.2f} s (base only "
              f"{first_steps['base only'][-1]:.2f} s); read {read_ratios[-1]:.3f} × the file")
    median = {mode: statistics.median(values) for mode, values in rows.items()}
    for mode, value in median.items():
        print(f"{mode:>14}: {value:.2f} s (median)")
    print(f"first / warm refined image: {median['first refined'] / median['warm refined']:.3f}")
    print(f"warm refined / base only: {median['warm refined'] / median['base only']:.3f}")
    print(f"time before the first step, first refined / base only: "
          f"{statistics.median(first_steps['first refined']) / statistics.median(first_steps['base only']):.3f}")
    if pid:
        print(f"bytes read from storage during the first refined image / file size: {statistics.median(read_ratios):.3f}")


if __name__ == "__main__":
    main()
