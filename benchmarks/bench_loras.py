"""What the refiner's LoRAs add at the switch, as a share of one sampling step, in a running host (WEBUI_URL).

The refiner is the byte copy of the base (so that the tiny LoRAs made for the base fit it), at 50 %.
Requests of the same seed alternate between the modes, round by round:

- base only: its median wall time over the steps is the time of one step;
- the refiner without LoRAs;
- the same LoRA set as the image before: the weights are already patched, nothing to do;
- a LoRA set that changed since the image before (its weight alternates): the host takes the old
  set out of the refiner's weights and puts the new one in, at the switch (WebUI) or when it loads
  the refiner's patcher (Forge 2, Neo);
- the same with a LoRA that has text-encoder weights: the refiner's prompts are encoded again too.

Prints the medians and, per LoRA mode, (mode - refiner without LoRAs) / one step.

    python -m tests.live.host run -- python benchmarks/bench_loras.py
    python -m tests.live.host run --forge -- python benchmarks/bench_loras.py --host forge
    python -m tests.live.host run --neo -- python benchmarks/bench_loras.py --host neo
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live.lora_oracles import LORA_TE, LORA_UNET, tag
from tests.live.webui_api import BASE, BASE_COPY, FORGE_BASE, FORGE_BASE_COPY, WebUIApi, ours

HOSTS = {"webui": (BASE, BASE_COPY), "forge": (FORGE_BASE, FORGE_BASE_COPY), "neo": (FORGE_BASE, FORGE_BASE_COPY)}
BASE_ONLY = "base only"
NO_LORA = "refiner, no LoRA"
SAME_SET = "refiner, same LoRA set as the image before"
CHANGED_SET = "refiner, LoRA set changed (UNet-only LoRA)"
CHANGED_TE_SET = "refiner, LoRA set changed (LoRA with text-encoder weights)"


def refiner_prompt(mode: str, round_index: int) -> str | None:
    weight = 0.8 if round_index % 2 == 0 else 0.7
    return {
        NO_LORA: "",
        SAME_SET: tag(LORA_UNET, 0.8),
        CHANGED_SET: tag(LORA_UNET, weight),
        CHANGED_TE_SET: tag(LORA_TE, weight),
    }.get(mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", choices=sorted(HOSTS), default="webui")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    base, copy = HOSTS[args.host]
    api = WebUIApi(os.environ.get("WEBUI_URL", "http://127.0.0.1:7860"))
    fields = {"prompt": "a red fox in the snow", "negative_prompt": "blurry", "steps": args.steps,
              "width": args.size, "height": args.size, "seed": 1234, "sampler_name": "Euler", "cfg_scale": 5.0,
              "override_settings": {"sd_model_checkpoint": base}, "send_images": False, "save_images": False}
    modes = [BASE_ONLY, NO_LORA, SAME_SET, CHANGED_SET, CHANGED_TE_SET]
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes:  # warm-up: the refiner and every LoRA read and built once
        api.txt2img(**fields, **_refiner(copy, mode, 1))
    for round_index in range(args.rounds):
        for mode in modes:
            if mode == SAME_SET:  # the image before had this very set
                api.txt2img(**fields, **_refiner(copy, SAME_SET, round_index))
            started = time.perf_counter()
            api.txt2img(**fields, **_refiner(copy, mode, round_index))
            times[mode].append(time.perf_counter() - started)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    step = medians[BASE_ONLY] / args.steps
    print(f"{args.host}, {args.size}², {args.steps} Euler steps, refiner = base copy at 50 %, "
          f"{args.rounds} rounds; one step {step * 1000:.1f} ms")
    for mode in modes:
        line = f"  {mode}: median {medians[mode]:.3f} s"
        if mode not in (BASE_ONLY, NO_LORA):
            line += f"; added at the switch: {(medians[mode] - medians[NO_LORA]) / step:+.2f} steps"
        print(line)


def _refiner(copy: str, mode: str, round_index: int) -> dict:
    prompt = refiner_prompt(mode, round_index)
    return {} if prompt is None else {"refiner": ours(copy, 50, prompt=prompt)}


if __name__ == "__main__":
    main()
