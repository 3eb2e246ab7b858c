"""Real-size SDXL on one CUDA GPU: what the refiner costs where users feel it, in one process.

    python benchmarks/bench_gpu.py [--rounds 3] [--size 1024] [--steps 30] [--share 20] [--dir /tmp]
    python benchmarks/bench_gpu.py --small --device cpu --size 64 --steps 6 --rounds 1   # smoke run

Base and refiner UNets in the released layouts with random weights, fp16, built on the device in
seconds with nothing downloaded. The refiner goes through a real single-file checkpoint that the
benchmark writes to --dir and the extension's loader reads. Real k-diffusion samplers with CFG
drive the project's handoff, with each case once per round, in an order that rotates:

- base only: the base runs every step;
- base copy: a second UNet of the base's layout as refiner, kept on the device: the handoff's
  own cost, with no difference in model size between the two sides;
- resident: the refiner kept on the device, the switch a pointer swap;
- offload: the refiner in pinned RAM, copied on a side stream while the base samples;
- lowvram: the refiner in RAM, moved in block by block the way the WebUI's --lowvram hooks
  move a UNet (one block on the device at a time; the base stays resident, so only the
  refiner's cost shows).

Reported, beside the goals: each case's wall time against base only (the median of the
per-round ratios), and the median time of a base and of a refiner step; the switch (on the
device's timeline, the gap between the last base call and the first refiner call minus the
median gap between base calls); the share of the offload copy the base steps hide; the first
use (the refiner's file read cold) against a raw read of the same bytes; peak device memory of
each case against the base alone plus the refiner's bytes, and memory left behind by a pass.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from k_diffusion import sampling
from k_diffusion.external import CompVisDenoiser
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_checkpoint import evict, unet_range
from sdxl_refiner.core.checkpoint import load_unet
from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.handoff import UNetSlot, route_model, unet_handoff
from sdxl_refiner.core.residency import (
    OffloadedRefiner,
    RefinerCache,
    named_tensors,
    put_back,
    start_device_copy,
    tensor_snapshot,
)
from sdxl_refiner.core.schedule import plan_switch, switch_point
from sdxl_refiner.core.settings import Settings
from sdxl_refiner.core.unet_config import HostUNetConfig
from tests.support.checkpoints import SCALAR_EMBED_DIM, UNET_PREFIX, small_unet_params
from tests.support.denoisers import CFGDenoiser, TinySDXL
from tests.support.released import SDXL_BASE_PARAMS, SDXL_REFINER_PARAMS
from tests.support.sgm_unet import SgmUNet

CASES = ("base only", "base copy", "resident", "offload", "lowvram")
REFINED = CASES[1:]
TOKENS = 77
CFG_SCALE = 7.0


# --- models and conds -----------------------------------------------------------------------------


def unet_params(small: bool) -> tuple[dict, dict]:
    """(base, refiner) constructor parameters: the released ones, or the same make-up in small."""
    if not small:
        return {**SDXL_BASE_PARAMS, "use_checkpoint": False}, {**SDXL_REFINER_PARAMS, "use_checkpoint": False}
    base = {**small_unet_params("base", model_channels=32), "num_head_channels": 16}
    refiner = {**small_unet_params("refiner", model_channels=64), "num_head_channels": 16}
    return base, refiner


def random_unet(params: dict, device: torch.device, dtype: torch.dtype, seed: int) -> SgmUNet:
    """Built on the meta device and filled in place where it will run: no RAM copy, no init pass
    over the full-size model on the CPU. Scaled by fan-in so activations stay finite in fp16."""
    with torch.device("meta"):
        unet = SgmUNet(**params)
    unet = unet.to_empty(device=device).to(dtype)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in named_tensors(unet).items():
            if tensor.ndim >= 2:
                tensor.normal_(0.0, tensor[0].numel() ** -0.5, generator=generator)
            elif name.endswith("weight"):
                tensor.fill_(1.0)
            else:
                tensor.zero_()
    return unet.requires_grad_(False).eval()


def context_width(params: dict) -> int:
    context = params["context_dim"]
    return context[0] if isinstance(context, list) else context


def random_conds(rows: int, params: dict, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device).manual_seed(seed)
    return {
        "crossattn": torch.randn(rows, TOKENS, context_width(params), generator=generator, device=device),
        "vector": torch.randn(rows, params["adm_in_channels"], generator=generator, device=device),
    }


def module_bytes(module: torch.nn.Module) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in named_tensors(module).values())


# --- what the host would do -----------------------------------------------------------------------


class SynchronousCopies:
    """Stream calls for a device without streams (the CPU smoke run): the copy happens at once."""

    def new_stream(self, device: torch.device) -> None:
        return None

    def on_stream(self, stream: object) -> AbstractContextManager:
        return contextlib.nullcontext()

    def record_event(self, stream: object) -> None:
        return None

    def wait_for(self, event: object, tensors: object) -> None:
        return None


class BlockByBlock:
    """The WebUI's --lowvram for one UNet (``setup_for_low_vram``): a forward pre-hook on each block
    moves it in and the block that ran before it back to RAM; what lies outside the blocks is
    moved in whole. On exit the UNet is put back on the tensors it had, as the binding does, so the
    cached refiner keeps its pinned RAM."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.unet = unet
        self.device = device
        self.on_device: torch.nn.Module | None = None
        self.handles: list = []
        self.kept: dict[str, torch.Tensor] = {}

    def __enter__(self) -> BlockByBlock:
        unet = self.unet
        self.kept = tensor_snapshot(unet)
        blocks = [unet.time_embed, *unet.input_blocks, unet.middle_block, *unet.output_blocks]
        self.handles = [block.register_forward_pre_hook(self._move_in) for block in blocks]
        for outside in (unet.label_emb, unet.out):
            outside.to(self.device)
        return self

    def _move_in(self, module: torch.nn.Module, _args: object) -> None:
        if module is self.on_device:
            return
        if self.on_device is not None:
            self.on_device.to("cpu")
        module.to(self.device)
        self.on_device = module

    def __exit__(self, *_exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        put_back(self.unet, self.kept)
        self.on_device = None


class CallClock:
    """Marks the start of every UNet call on the device's own timeline (CUDA events): the host runs
    ahead of the GPU, so a host clock would not show the device waiting at the switch."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def hook(self, name: str) -> Callable[..., None]:
        def mark(_module: torch.nn.Module, _args: object) -> None:
            if self.cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                self.marks.append((name, event))
            else:
                self.marks.append((name, time.perf_counter()))

        return mark

    def times_ms(self) -> list[tuple[str, float]]:
        if not self.marks:
            return []
        first = self.marks[0][1]
        if self.cuda:
            torch.cuda.synchronize()
            return [(name, first.elapsed_time(event)) for name, event in self.marks]
        return [(name, (mark - first) * 1000) for name, mark in self.marks]

    def step_ms(self, name: str) -> float | None:
        times = [time for unet, time in self.times_ms() if unet == name]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        return statistics.median(gaps) if gaps else None

    def switch_ms(self) -> float | None:
        """Gap from the last base call to the first refiner call, less a typical base step."""
        times = self.times_ms()
        names = [name for name, _ in times]
        if "refiner" not in names or names.index("refiner") < 3:
            return None
        first = names.index("refiner")
        base_gaps = [times[i + 1][1] - times[i][1] for i in range(first - 1)]
        return times[first][1] - times[first - 1][1] - statistics.median(base_gaps)


@contextlib.contextmanager
def marked(clock: CallClock, modules: dict[str, torch.nn.Module]) -> Iterator[None]:
    handles = [module.register_forward_pre_hook(clock.hook(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- one run --------------------------------------------------------------------------------------


@dataclass
class Measured:
    wall_s: float
    peak_over_start_bytes: int | None  # device memory the pass added at its peak
    left_behind_bytes: int | None
    switch_ms: float | None
    base_step_ms: float | None
    refiner_step_ms: float | None


@dataclass
class Bench:
    device: torch.device
    sd_model: TinySDXL
    denoiser: CFGDenoiser
    sigmas: torch.Tensor
    latent: tuple[int, ...]
    extra_args: dict
    refiner_args: dict
    base_steps: int
    resident: torch.nn.Module
    base_copy: torch.nn.Module
    ram_cache: RefinerCache
    refiner_file: Path
    build: Callable[[dict], torch.nn.Module]
    host_config: HostUNetConfig
    lowvram_refiner: torch.nn.Module

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ram_refiner(self):
        dtype = torch.float16 if self.cuda else None

        def load(path: Path) -> torch.nn.Module:
            return load_unet(path, self.build, dtype, "cpu", pin_memory=self.cuda, host_config=self.host_config)

        return self.ram_cache.start_loading(self.refiner_file, load, (dtype, self.cuda, self.host_config),
                                            pinned=self.cuda)

    def sample(self, sampler: str, model: Callable[..., torch.Tensor], seed: int) -> torch.Tensor:
        generator = torch.Generator(self.device).manual_seed(seed)
        x = torch.randn(self.latent, generator=generator, device=self.device) * self.sigmas[0]
        torch.manual_seed(seed)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.cuda else contextlib.nullcontext()
        with autocast:
            return getattr(sampling, f"sample_{sampler}")(
                model, x, self.sigmas, extra_args=self.extra_args, disable=True
            )

    def run(self, case: str, sampler: str, seed: int) -> Measured:
        slot = UNetSlot(self.sd_model.model, "diffusion_model")
        point = switch_point(sampler, self.sigmas, self.base_steps)
        clock = CallClock(self.device)
        self.synchronize()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if case == "base only":
                stack.enter_context(marked(clock, {"base": slot.get()}))
                self.sample(sampler, self.denoiser, seed)
            elif case == "base copy":
                stack.enter_context(marked(clock, {"base": slot.get(), "refiner": self.base_copy}))
                handoff = stack.enter_context(unet_handoff(slot, self.base_copy, point))
                self.sample(sampler, route_model(self.denoiser, handoff), seed)
            elif case == "resident":
                stack.enter_context(marked(clock, {"base": slot.get(), "refiner": self.resident}))
                handoff = stack.enter_context(unet_handoff(slot, self.resident, point))
                self.sample(sampler, route_model(self.denoiser, handoff, self.refiner_args), seed)
            elif case == "offload":
                pending = self.ram_refiner()
                offloaded = OffloadedRefiner(pending, self.device, None if self.cuda else SynchronousCopies())
                stack.callback(offloaded.release)
                stack.enter_context(marked(clock, {"base": slot.get(), "refiner": pending.result()}))
                offloaded.start()
                handoff = stack.enter_context(unet_handoff(slot, offloaded.at_switch, point))
                self.sample(sampler, route_model(self.denoiser, handoff, self.refiner_args), seed)
            elif case == "lowvram":
                refiner = self.lowvram_refiner
                stack.enter_context(marked(clock, {"base": slot.get(), "refiner": refiner}))
                handoff = stack.enter_context(
                    unet_handoff(slot, refiner, point,
                                 on_switch=lambda module: stack.enter_context(BlockByBlock(module, self.device)))
                )
                self.sample(sampler, route_model(self.denoiser, handoff, self.refiner_args), seed)
            else:
                raise ValueError(case)
            self.synchronize()
        wall = time.perf_counter() - start
        peak = left = None
        if self.cuda:
            self.synchronize()
            peak = torch.cuda.max_memory_allocated(self.device) - before
            left = torch.cuda.memory_allocated(self.device) - before
        refined = case != "base only"
        return Measured(
            wall, peak, left, clock.switch_ms() if refined else None,
            clock.step_ms("base"), clock.step_ms("refiner") if refined else None,
        )

    def copy_alone_s(self) -> float:
        """The offload copy with nothing else running: what the base steps have to hide."""
        module = self.ram_refiner().result()
        self.synchronize()
        start = time.perf_counter()
        copy = start_device_copy(module, self.device, None if self.cuda else SynchronousCopies())
        copy.wait()
        self.synchronize()
        elapsed = time.perf_counter() - start
        del copy
        return elapsed


# --- the first use --------------------------------------------------------------------------------


def raw_read_s(path: Path) -> float:
    """``readinto`` of the UNet's byte range into new memory, cold: what any load has to do."""
    first, end, _ = unet_range(path)
    evict(path)
    start = time.perf_counter()
    buffer = torch.empty(end - first, dtype=torch.uint8)
    view = memoryview(buffer.numpy()).cast("B")
    with path.open("rb", buffering=0) as file:
        file.seek(first)
        done = 0
        while done < len(view):
            got = file.readinto(view[done:])
            if not got:
                raise OSError(f"{path} ended early")
            done += got
    return time.perf_counter() - start


def load_s(path: Path, build, host_config: HostUNetConfig, pin: bool) -> float:
    evict(path)
    start = time.perf_counter()
    module = load_unet(path, build, None, "cpu", pin_memory=pin, host_config=host_config)
    elapsed = time.perf_counter() - start
    del module
    return elapsed


def write_refiner_file(path: Path, refiner: torch.nn.Module) -> None:
    save_file({UNET_PREFIX + key: value.detach().cpu().contiguous() for key, value in refiner.state_dict().items()}, str(path))
    with path.open("rb+") as file:
        os.fsync(file.fileno())  # dirty pages cannot be evicted: the cold reads would read RAM


# --- report ---------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("  [goal met]" if ok else "  [goal MISSED]")


def gb(count: float) -> str:
    return f"{count / 1e9:.2f} GB"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="reduced widths (the CPU smoke run)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--share", type=float, default=20.0, help="Refiner steps %%")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samplers", default="dpmpp_2m,euler_ancestral")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the refiner file is written")
    options = parser.parse_args()

    device = torch.device(options.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here; run with --device cpu --small for the smoke run.")
    dtype = torch.float16 if cuda else torch.float32
    samplers = options.samplers.split(",")
    base_params, refiner_params = unet_params(options.small)
    print(f"device: {device_name(device)}")
    print(f"{'small' if options.small else 'real-size'} SDXL, {options.size}², {options.steps} steps, "
          f"{options.share:g} % refiner, CFG {CFG_SCALE}, {options.rounds} rounds, samplers {', '.join(samplers)}")

    started = time.perf_counter()
    base = random_unet(base_params, device, dtype, seed=1)
    refiner_source = random_unet(refiner_params, device, dtype, seed=2)
    built_s = time.perf_counter() - started
    refiner_bytes = module_bytes(refiner_source)
    print(f"built base {gb(module_bytes(base))} and refiner {gb(refiner_bytes)} on {device} in {built_s:.1f} s")

    with tempfile.TemporaryDirectory(dir=options.dir, prefix="bench-gpu-") as folder:
        refiner_file = Path(folder) / "refiner.safetensors"
        write_refiner_file(refiner_file, refiner_source)
        del refiner_source
        if cuda:
            torch.cuda.empty_cache()

        def build(params: dict) -> torch.nn.Module:
            return SgmUNet(**params)

        host_config = HostUNetConfig.from_params("bench_gpu.py", refiner_params)
        reads = [(raw_read_s(refiner_file), load_s(refiner_file, build, host_config, pin=cuda)) for _ in range(max(options.rounds, 1))]
        unet_bytes = unet_range(refiner_file)[2]

        resident = load_unet(refiner_file, build, dtype, device, host_config=host_config)
        lowvram_refiner = load_unet(refiner_file, build, dtype, "cpu", pin_memory=cuda, host_config=host_config)
        sd_model = TinySDXL(base).to(device)
        denoiser = CFGDenoiser(CompVisDenoiser(sd_model))
        sigmas = sampling.get_sigmas_karras(
            options.steps, denoiser.inner_model.sigma_min.item(), denoiser.inner_model.sigma_max.item(), device=device
        )
        spec = RefinerCondSpec("refiner", context_width(refiner_params), refiner_params["adm_in_channels"], SCALAR_EMBED_DIM)
        cond, uncond = random_conds(1, base_params, device, 10), random_conds(1, base_params, device, 11)
        bench = Bench(
            device=device, sd_model=sd_model, denoiser=denoiser, sigmas=sigmas,
            latent=(1, 4, options.size // 8, options.size // 8),
            extra_args={"cond": cond, "uncond": uncond, "cond_scale": CFG_SCALE},
            refiner_args={"cond": refiner_conditioning(cond, spec, 6.0), "uncond": refiner_conditioning(uncond, spec, 2.5)},
            base_steps=plan_switch(Settings(enabled=True, steps_percent=options.share), options.steps).base_steps,
            resident=resident, base_copy=random_unet(base_params, device, dtype, seed=3), ram_cache=RefinerCache(1), refiner_file=refiner_file, build=build,
            host_config=host_config, lowvram_refiner=lowvram_refiner,
        )
        bench.ram_refiner().result()

        for sampler in samplers:  # warm-up: kernels chosen, caches filled
            for case in CASES:
                bench.run(case, sampler, seed=0)
        results: dict[tuple[str, str], list[Measured]] = {}
        for round_index in range(options.rounds):
            for sampler in samplers:
                order = CASES[round_index % len(CASES):] + CASES[: round_index % len(CASES)]
                for case in order:
                    results.setdefault((sampler, case), []).append(bench.run(case, sampler, seed=round_index + 1))
        copies = [bench.copy_alone_s() for _ in range(max(options.rounds, 1))]
        bench.ram_cache.shutdown()

    report(bench, results, reads, copies, unet_bytes, module_bytes(base), refiner_bytes)


def report(
    bench: Bench,
    results: dict[tuple[str, str], list[Measured]],
    reads: list[tuple[float, float]],
    copies: list[float],
    unet_bytes: int,
    base_bytes: int,
    refiner_bytes: int,
) -> None:
    samplers = sorted({sampler for sampler, _ in results})

    def values(case: str, attribute: str, sampler: str | None = None) -> list[float]:
        return [
            getattr(run, attribute)
            for (s, c), runs in results.items() if c == case and sampler in (None, s)
            for run in runs if getattr(run, attribute) is not None
        ]

    def paired_ratio(case: str, sampler: str | None = None) -> float:
        """Median over rounds of the case's time over base only's in the same round and sampler."""
        ratios = [
            run.wall_s / base.wall_s
            for s in samplers if sampler in (None, s)
            for run, base in zip(results[(s, case)], results[(s, "base only")], strict=True)
        ]
        return statistics.median(ratios)

    def median_of(case: str, attribute: str, sampler: str | None = None) -> float:
        found = values(case, attribute, sampler)
        return statistics.median(found) if found else float("nan")

    print("\nwall time, median per sampler (ratio to base only, paired by round):")
    for sampler in samplers:
        cells = [f"base only {median_of('base only', 'wall_s', sampler):.3f} s"]
        cells += [
            f"{case} {median_of(case, 'wall_s', sampler):.3f} s ({paired_ratio(case, sampler):.3f})" for case in REFINED
        ]
        print(f"  {sampler}: " + ", ".join(cells))
    print(f"  step: base {median_of('base only', 'base_step_ms'):.1f} ms, refiner {median_of('resident', 'refiner_step_ms'):.1f} ms "
          "(a refiner step costs what its size costs; the base copy isolates the handoff)")
    goals = {"base copy": 1.01, "resident": 1.01, "offload": 1.03, "lowvram": None}
    for case, goal in goals.items():
        value = paired_ratio(case)
        target = f", goal <= {goal}" if goal else ""
        print(f"  {case} / base only, all samplers: {value:.3f}{target}{verdict(value <= goal if goal else None)}")

    print("\nswitch (device timeline: gap to the first refiner call minus a median base step):")
    for case in ("base copy", "resident"):
        switch = median_of(case, "switch_ms")
        print(f"  {case}: {switch:.3f} ms, goal <= 1 ms{verdict(switch <= 1.0)}")
    offload_switch = median_of("offload", "switch_ms")
    copy_s = statistics.median(copies)
    hidden = 1 - max(offload_switch, 0.0) / (copy_s * 1000)
    print(f"  offload: {offload_switch:.3f} ms left at the switch; the copy alone takes {copy_s * 1000:.1f} ms "
          f"({gb(refiner_bytes / copy_s)}/s): {hidden:.1%} hidden, goal >= 90 %{verdict(hidden >= 0.9)}")

    raw = statistics.median(raw for raw, _ in reads)
    load = statistics.median(load for _, load in reads)
    print("\nfirst use, cold (the file's pages evicted):")
    print(f"  raw read {raw:.2f} s ({gb(unet_bytes / raw)}/s), load {load:.2f} s ({gb(unet_bytes / load)}/s)"
          f"{' into pinned memory' if bench.cuda else ''}: load speed / raw {raw / load:.2f}, goal >= 0.9"
          f"{verdict(raw / load >= 0.9)}")

    print("\npeak device memory of each case, as if alone, against the base alone plus the refiner's bytes:")
    if not bench.cuda:
        print("  n/a: no CUDA device")
        return
    # Each case counted as if it ran alone: the base, the refiner it keeps on the device (resident
    # only), and what the pass added at its peak; the benchmark holds every case's models at once.
    base_alone = base_bytes + median_of("base only", "peak_over_start_bytes")
    limit = base_alone + refiner_bytes
    print(f"  base alone {gb(base_alone)}, refiner {gb(refiner_bytes)}, limit {gb(limit)}")
    for case in ("resident", "offload", "lowvram"):
        held = refiner_bytes if case == "resident" else 0
        peak = base_bytes + held + median_of(case, "peak_over_start_bytes")
        extra = (peak - limit) / refiner_bytes
        print(f"  {case}: peak {gb(peak)}, {peak / limit:.3f} of the limit, {extra:+.2f} refiner sizes over it, "
              f"goal < +0.5 (no second copy){verdict(extra < 0.5)}")
    for case in CASES:
        left = max(values(case, "left_behind_bytes"))
        print(f"  left on the device after a {case} pass: {int(left)} bytes{verdict(left == 0)}")


if __name__ == "__main__":
    main()
