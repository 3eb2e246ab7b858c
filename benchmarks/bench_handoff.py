"""Cost of the handoff: a refined run against a base-only run of the same steps, in one process.

Two UNets of the same size (so the only difference is the routing: the wrapped model call, the
one swap, the refiner conds), runs alternated in ABBA order so drift hits both sides alike; the
figure is the median of the per-pair wall-time ratios. Target: at most 1.01. The ratio of
process CPU times is printed beside it: on a shared machine it is the steadier of the two.

    python benchmarks/bench_handoff.py [--pairs 25] [--steps 20] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.handoff import UNetSlot, route_model, unet_handoff
from sdxl_refiner.core.schedule import SwitchPoint, calls_per_step, plan_switch, switch_point
from sdxl_refiner.core.settings import Settings
from tests.support.denoisers import WIDTHS, base_conds, build_stack, run_sampler, schedule_sigmas
from tests.support.tiny_unet import make_tiny_unet

SAMPLERS = ("euler_ancestral", "dpmpp_2m", "heun", "dpmpp_sde")
MODEL_CHANNELS = 64
LATENT = (2, 4, 32, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--share", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    device = torch.device(options.device)

    dims = {"model_channels": MODEL_CHANNELS, "context_dim": WIDTHS.base_context_dim, "adm_in_channels": WIDTHS.base_adm}
    base, refiner = make_tiny_unet(1, **dims).to(device), make_tiny_unet(2, **dims).to(device)
    sd_model, cfg = build_stack(base)
    sd_model.to(device)
    cfg.inner_model.sigmas, cfg.inner_model.log_sigmas = cfg.inner_model.sigmas.to(device), cfg.inner_model.log_sigmas.to(device)
    slot = UNetSlot(sd_model.model, "diffusion_model")
    sigmas = schedule_sigmas("karras", cfg.inner_model, options.steps).to(device)
    images = LATENT[0]
    extra_args = {
        "cond": {key: value.to(device) for key, value in base_conds(images, seed=10).items()},
        "uncond": {key: value.to(device) for key, value in base_conds(images, seed=11).items()},
        "cond_scale": 5.0,
    }
    spec = RefinerCondSpec("base", dims["context_dim"], dims["adm_in_channels"], WIDTHS.scalar_embed_dim)
    plan = plan_switch(Settings(enabled=True, steps_percent=options.share), options.steps)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def base_only(sampler: str) -> tuple[float, float]:
        synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        run_sampler(sampler, cfg, sigmas, extra_args, 0, shape=LATENT)
        synchronize()
        return time.perf_counter() - start, time.process_time() - start_cpu

    def refined(sampler: str) -> tuple[float, float]:
        synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        refiner_args = {
            "cond": refiner_conditioning(extra_args["cond"], spec, 6.0),
            "uncond": refiner_conditioning(extra_args["uncond"], spec, 2.5),
        }
        with unet_handoff(slot, refiner, switch_point(sampler, sigmas, plan.base_steps)) as handoff:
            run_sampler(sampler, route_model(cfg, handoff, refiner_args), sigmas, extra_args, 0, shape=LATENT)
        synchronize()
        return time.perf_counter() - start, time.process_time() - start_cpu

    print(f"device {device}, threads {torch.get_num_threads()}, latent {LATENT}, UNet channels {MODEL_CHANNELS}, "
          f"{options.steps} steps, refiner {plan.refiner_steps} steps, {options.pairs} ABBA pairs per sampler")
    all_wall: list[float] = []
    all_cpu: list[float] = []
    with torch.no_grad():
        for sampler in SAMPLERS:
            base_only(sampler), refined(sampler)
            base_times, refined_times, wall_ratios, cpu_ratios = [], [], [], []
            for pair in range(options.pairs):
                if pair % 2:
                    b = base_only(sampler)
                    r = refined(sampler)
                else:
                    r = refined(sampler)
                    b = base_only(sampler)
                base_times.append(b[0])
                refined_times.append(r[0])
                wall_ratios.append(r[0] / b[0])
                cpu_ratios.append(r[1] / b[1])
            all_wall += wall_ratios
            all_cpu += cpu_ratios
            print(f"{sampler:>16}: base-only {statistics.median(base_times) * 1e3:7.1f} ms, "
                  f"refined {statistics.median(refined_times) * 1e3:7.1f} ms, median ratio wall "
                  f"{statistics.median(wall_ratios):.4f}, cpu {statistics.median(cpu_ratios):.4f}")
    print(f"{'all':>16}: median ratio wall {statistics.median(all_wall):.4f}, "
          f"cpu {statistics.median(all_cpu):.4f} (target <= 1.01)")
    per_call = routing_cost_per_call()
    model_call = statistics.median(base_times) / sum(calls_per_step(SAMPLERS[-1], sigmas))
    print(f"routing alone: {per_call * 1e6:.2f} us per model call, {per_call / model_call:.3%} of one "
          f"{model_call * 1e3:.1f} ms model call of {SAMPLERS[-1]}")


def routing_cost_per_call(calls: int = 200_000) -> float:
    """What the wrapper and the handoff's bookkeeping add to one model call, with a no-op model."""
    holder = torch.nn.Module()
    holder.unet = torch.nn.Identity()
    x, sigma = torch.zeros(1), torch.ones(1)

    def model(x: torch.Tensor, sigma: torch.Tensor, **extra_args: object) -> torch.Tensor:
        return x

    times = []
    for _ in range(5):
        with unet_handoff(UNetSlot(holder, "unet"), torch.nn.Identity(), SwitchPoint(calls // 2, None)) as handoff:
            routed = route_model(model, handoff, {"cond": None})
            start = time.perf_counter()
            for _ in range(calls):
                routed(x, sigma, cond=1)
            routed_time = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(calls):
            model(x, sigma, cond=1)
        times.append((routed_time - (time.perf_counter() - start)) / calls)
    return statistics.median(times)

if __name__ == "__main__":
    main()
