"""Wall time of generations through a running WebUI (WEBUI_URL): ours vs base-only vs the built-in refiner.

Requests of the same seed and steps alternate between the modes, round by round, so drift of
the machine hits every mode alike. The built-in refiner is set to switch by sampling steps at
the same split as ours. Prints medians and the ratios; run with the WebUI idle otherwise. With
the WebUI's console log (``WEBUI_CONSOLE``, which the project's host script sets) it also counts
the whole-checkpoint loads (the WebUI's "Loading weights" lines) each mode costs per image.

    WEBUI_URL=http://127.0.0.1:7860 python benchmarks/bench_webui.py --rounds 7 --steps 20
    python -m tests.live.host run -- python benchmarks/bench_webui.py    # a host of its own
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live.webui_api import BASE, BASE_COPY, REFINER, WebUIApi, ours


def modes(percent: float) -> dict[str, dict]:
    switch_at = 1 - percent / 100
    return {
        "base only": {},
        "SDXL Refiner (ours)": {"refiner": ours(REFINER, percent)},
        # the base's own weights as refiner: what the handoff itself costs, the UNets being equal
        "ours, base copy as refiner": {"refiner": ours(BASE_COPY, percent)},
        "built-in refiner": {
            "refiner_checkpoint": REFINER,
            "refiner_switch_at": switch_at,
            "override_settings": {"sd_model_checkpoint": BASE, "refiner_switch_by_sample_steps": True},
        },
    }


def wait_until_idle(api: WebUIApi, limit_s: float = 120.0) -> None:
    """Other clients' jobs would be timed with ours: start a request only when the WebUI is idle."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = api.call("/sdapi/v1/progress?skip_current_image=true").get("state", {})
        if not state.get("job") and not state.get("job_count"):
            return
        time.sleep(0.2)


class CheckpointLoads:
    """Counts the WebUI's whole-checkpoint loads in its console log, from where the last count ended."""

    LINE = "Loading weights ["

    def __init__(self, console: str | None):
        self.path = Path(console) if console else None
        self.offset = self.path.stat().st_size if self.path else 0

    def since_last(self) -> int:
        if self.path is None:
            return 0
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
            self.offset = log.tell()
        return text.count(self.LINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--percent", type=float, default=20.0)
    parser.add_argument("--sampler", default="Euler")
    args = parser.parse_args()
    url = os.environ.get("WEBUI_URL")
    if not url:
        sys.exit("Set WEBUI_URL to a running WebUI (see tests/live/README.md).")
    api = WebUIApi(url)
    common = {"steps": args.steps, "width": args.size, "height": args.size, "sampler_name": args.sampler}
    runs = modes(args.percent)
    times: dict[str, list[float]] = {name: [] for name in runs}
    # two refiners alternate: keep both loaded, or every request would time a load
    cache_size = api.call("/sdapi/v1/options").get("sdxl_refiner_cache_size", 1)
    api.call("/sdapi/v1/options", {"sdxl_refiner_cache_size": 2})
    # The built-in refiner leaves the refiner checkpoint loaded: the next request reloads the base.
    # A user pays that reload for every image, so it is charged to the built-in mode: a tiny request
    # right after it (which reloads) minus the same tiny request with the base already loaded.
    tiny = {"steps": 1, "width": 64, "height": 64, "sampler_name": args.sampler}
    reload_back: list[float] = []
    loads = CheckpointLoads(os.environ.get("WEBUI_CONSOLE"))
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
                elapsed = timed({**common, **fields})
                if name == "built-in refiner":
                    reload = max(0.0, timed(tiny) - timed(tiny))
                    elapsed += reload
                    if round_index:
                        reload_back.append(reload)
                loaded = loads.since_last()  # the built-in refiner's reload back to the base included
                if round_index:  # round 0 warms every mode up (model loads, caches)
                    times[name].append(elapsed)
                    loads_per_image[name].append(loaded)
    finally:
        # 1.10.1 does not restore an override of an option that was never saved: put it back by hand
        api.call("/sdapi/v1/options", {"refiner_switch_by_sample_steps": False, "sdxl_refiner_cache_size": cache_size})
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "settings": vars(args),
        "median_seconds": medians,
        "min_seconds": {name: min(values) for name, values in times.items()},
        "ours_over_base_only": medians["SDXL Refiner (ours)"] / medians["base only"],
        "ours_over_builtin": medians["SDXL Refiner (ours)"] / medians["built-in refiner"],
        "builtin_reload_back_seconds": statistics.median(reload_back),
        "handoff_overhead": medians["ours, base copy as refiner"] / medians["base only"],
        "checkpoint_loads_per_image": (
            {name: statistics.mean(counts) for name, counts in loads_per_image.items()}
            if loads.path else "not counted: set WEBUI_CONSOLE to the WebUI's console log"
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
