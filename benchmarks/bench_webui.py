"""Wall time and memory of generations through a running WebUI, Forge 2 or Forge Neo (WEBUI_URL): ours vs base-only vs the built-in refiner.

Requests of the same seed and steps alternate between the modes, round by round, so drift of
the machine hits every mode alike. The built-in refiner switches by sampling steps at the same
split as ours (Forge's only ever does). Prints medians and the ratios; run with the host idle
otherwise. With the host's console log (``WEBUI_CONSOLE``, which the project's host script sets)
it also counts the whole-checkpoint loads each mode costs per image, and with its process id
(``WEBUI_PID``, also set there) the process's resident memory during each mode's requests.

    WEBUI_URL=http://127.0.0.1:7860 python benchmarks/bench_webui.py --rounds 7 --steps 20
    python -m tests.live.host run -- python benchmarks/bench_webui.py    # a host of its own
    python -m tests.live.host run --forge -- python benchmarks/bench_webui.py --host forge
    python -m tests.live.host run --neo -- python benchmarks/bench_webui.py --host neo

Forge Neo's built-in refiner runs in two modes, both measured: the default reloads the whole
checkpoint at the switch, ``refiner_fast_sd`` only the UNet's state dict. It cannot run a
refiner-type checkpoint (it hands the refiner the base's conds), so on Neo both refiners are a
base-type fine-tune of the base, as users take one: ours and the built-in run the same UNet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live.webui_api import (
    BASE,
    BASE_COPY,
    FORGE_BASE,
    FORGE_BASE_COPY,
    FORGE_BASE_FINETUNE,
    FORGE_REFINER,
    REFINER,
    WebUIApi,
    ours,
)

BUILT_IN = "built-in refiner"
BUILT_IN_FAST = "built-in refiner, refiner_fast_sd"
OURS = "SDXL Refiner (ours)"
BASE_COPY_MODE = "ours, base copy as refiner"


@dataclass(frozen=True)
class Host:
    """What differs between the hosts for this benchmark: checkpoint names and their load line."""

    base: str
    base_copy: str
    refiner: str
    # printed once per whole-checkpoint load
    load_line: str
    # options the built-in refiner needs to switch by sampling steps, as ours does
    builtin_options: dict = field(default_factory=dict)
    # options of a second mode of the built-in refiner, if the host has one
    builtin_fast_options: dict | None = None


HOSTS = {
    "webui": Host(BASE, BASE_COPY, REFINER, "Loading weights [", {"refiner_switch_by_sample_steps": True}),
    # Forge switches by step / total steps only, and prints this line for each forge_model_reload()
    "forge": Host(FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER, "Loading Model: "),
    # Neo switches at a sigma unless refiner_use_steps is on; refiner_fast_sd reads the UNet's state
    # dict from the file instead of reloading the checkpoint, and prints this line instead
    "neo": Host(FORGE_BASE, FORGE_BASE_COPY, FORGE_BASE_FINETUNE, "Loading Model: ", {"refiner_use_steps": True},
                {"refiner_use_steps": True, "refiner_fast_sd": True}),
}


def modes(host: Host, percent: float) -> dict[str, dict]:
    builtin = {"refiner_checkpoint": host.refiner, "refiner_switch_at": 1 - percent / 100}
    fast = {} if host.builtin_fast_options is None else {
        BUILT_IN_FAST: {**builtin, "override_settings": {"sd_model_checkpoint": host.base, **host.builtin_fast_options}},
    }
    return {
        "base only": {"override_settings": {"sd_model_checkpoint": host.base}},
        OURS: {"refiner": ours(host.refiner, percent), "override_settings": {"sd_model_checkpoint": host.base}},
        # the base's own weights as refiner: what the handoff itself costs, the UNets being equal
        BASE_COPY_MODE: {"refiner": ours(host.base_copy, percent),
                         "override_settings": {"sd_model_checkpoint": host.base}},
        BUILT_IN: {**builtin, "override_settings": {"sd_model_checkpoint": host.base, **host.builtin_options}},
        **fast,
    }


class ResidentMemory:
    """The host process's peak resident set during a request, sampled from /proc every few ms.

    ``VmHWM`` would give the peak since the process started: it cannot tell the modes apart."""

    def __init__(self, pid: str | None, every_s: float = 0.005):
        self.status = Path(f"/proc/{pid}/status") if pid else None
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> int:
        if self.status is None:
            return 0
        for line in self.status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> ResidentMemory:
        self.peak = self.now()
        if self.status is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, self.now())


def wait_until_idle(api: WebUIApi, limit_s: float = 120.0) -> None:
    """Other clients' jobs would be timed with ours: start a request only when the WebUI is idle."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = api.call("/sdapi/v1/progress?skip_current_image=true").get("state", {})
        if not state.get("job") and not state.get("job_count"):
            return
        time.sleep(0.2)


# Neo's refiner_fast_sd: a read of a UNet's state dict from a file (at the switch, and back), in place of a checkpoint load
FAST_LOAD_LINES = ("Reloading state_dict", "Restoring state_dict")


class CheckpointLoads:
    """Counts the host's checkpoint loads (and reads of a UNet's state dict from a file) in its
    console log, from where the last count ended."""

    def __init__(self, console: str | None, *lines: str):
        self.path = Path(console) if console else None
        self.lines = lines
        self.offset = self.path.stat().st_size if self.path else 0

    def since_last(self) -> int:
        if self.path is None:
            return 0
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
            self.offset = log.tell()
        return sum(text.count(line) for line in self.lines)


def gib(size: float) -> float:
    return round(size / 2**30, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", choices=sorted(HOSTS), default="webui")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--percent", type=float, default=20.0)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--modes", nargs="+", metavar="MODE",
                        help="only these modes (by name), e.g. for each mode's memory in a process of its own")
    args = parser.parse_args()
    url = os.environ.get("WEBUI_URL")
    if not url:
        sys.exit("Set WEBUI_URL to a running WebUI or Forge (see tests/live/README.md).")
    host = HOSTS[args.host]
    api = WebUIApi(url)
    common = {"steps": args.steps, "width": args.size, "height": args.size, "sampler_name": args.sampler}
    runs = modes(host, args.percent)
    if args.modes:
        unknown = set(args.modes) - set(runs)
        if unknown:
            sys.exit(f"unknown modes {sorted(unknown)}; the modes are {sorted(runs)}")
        runs = {name: fields for name, fields in runs.items() if name in args.modes}
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[int]] = {name: [] for name in runs}
    memory = ResidentMemory(os.environ.get("WEBUI_PID"))
    resident_at_start = memory.now()
    # two refiners alternate: keep both loaded, or every request would time a load
    saved = api.call("/sdapi/v1/options")
    api.call("/sdapi/v1/options", {"sdxl_refiner_cache_size": 2})
    # The built-in refiner leaves the refiner checkpoint loaded: the next request reloads the base,
    # and a freshly loaded model runs its first image slower. A user pays both for every image, so
    # they are charged to the built-in mode: the base-only image right after it minus the same
    # image once the base is settled again.
    next_image = {**common, **modes(host, args.percent)["base only"]}
    reload_back: list[float] = []
    loads = CheckpointLoads(os.environ.get("WEBUI_CONSOLE"), host.load_line, *FAST_LOAD_LINES)
    loads_per_image: dict[str, list[int]] = {name: [] for name in runs}

    def timed(fields: dict) -> float:
        wait_until_idle(api)
        started = time.perf_counter()
        api.txt2img(**fields)
        return time.perf_counter() - started

    try:
        for round_index in range(args.rounds + 1):
            for name, fields in runs.items():
                loads.since_last()
                with memory:
                    elapsed = timed({**common, **fields})
                    if name in (BUILT_IN, BUILT_IN_FAST):
                        reload = max(0.0, timed(next_image) - timed(next_image))
                        elapsed += reload
                        if round_index:
                            reload_back.append(reload)
                loaded = loads.since_last()  # the built-in refiner's reload back to the base included
                if round_index:  # round 0 warms every mode up (model loads, caches)
                    times[name].append(elapsed)
                    loads_per_image[name].append(loaded)
                    peaks[name].append(memory.peak)
    finally:
        # 1.10.1 does not restore an override of an option that was never saved: put it back by hand
        api.call("/sdapi/v1/options", {name: saved.get(name) for name in
                                       ("sdxl_refiner_cache_size", *host.builtin_options,
                                        *(host.builtin_fast_options or {}))})
    medians = {name: statistics.median(values) for name, values in times.items()}

    def ratio(numerator: str, denominator: str) -> float | str:
        if numerator in medians and denominator in medians:
            return medians[numerator] / medians[denominator]
        return "not run"

    result = {
        "settings": vars(args),
        "median_seconds": medians,
        "min_seconds": {name: min(values) for name, values in times.items()},
        "ours_over_base_only": ratio(OURS, "base only"),
        "ours_over_builtin": ratio(OURS, BUILT_IN),
        "ours_over_builtin_fast": ratio(OURS, BUILT_IN_FAST),
        "builtin_reload_back_seconds": statistics.median(reload_back) if reload_back else "not run",
        "handoff_overhead": ratio(BASE_COPY_MODE, "base only"),
        "checkpoint_loads_per_image": (
            {name: statistics.mean(counts) for name, counts in loads_per_image.items()}
            if loads.path else "not counted: set WEBUI_CONSOLE to the host's console log"
        ),
        "resident_gib": (
            {"at start": gib(resident_at_start),
             **{f"peak during {name}": gib(max(values)) for name, values in peaks.items()}}
            if memory.status else "not measured: set WEBUI_PID to the host's process id"
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
