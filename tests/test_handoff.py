"""The handoff inside real k-diffusion samplers: one loop, switched at the exact step boundary."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from sdxl_refiner.core.conditioning import RefinerCondSpec, refiner_conditioning
from sdxl_refiner.core.handoff import UNetSlot, route_model, unet_handoff
from sdxl_refiner.core.schedule import calls_per_step, plan_switch, switch_point
from sdxl_refiner.core.settings import Settings
from tests.support.denoisers import (
    EXACT_SAMPLERS,
    SCHEDULES,
    WIDTHS,
    NamedUNet,
    attribute_calls,
    base_conds,
    base_unet,
    build_stack,
    refiner_unet,
    run_sampler,
    schedule_sigmas,
    step_logger,
    traced,
)

CFG_SCALE = 3.0


def conds(cond_rows: int = 1, uncond_rows: int = 1) -> dict[str, object]:
    return {"cond": base_conds(cond_rows, seed=10), "uncond": base_conds(uncond_rows, seed=11), "cond_scale": CFG_SCALE}


def refiner_args(extra_args: dict[str, object], spec: RefinerCondSpec) -> dict[str, object]:
    return {
        "cond": refiner_conditioning(extra_args["cond"], spec, 6.0),  # type: ignore[arg-type]
        "uncond": refiner_conditioning(extra_args["uncond"], spec, 2.5),  # type: ignore[arg-type]
    }


def spec_of(unet: torch.nn.Module, kind: str) -> RefinerCondSpec:
    return RefinerCondSpec(kind, unet.context_dim, unet.adm_in_channels, WIDTHS.scalar_embed_dim)  # type: ignore[arg-type]


def sample(sampler, base, sigmas, extra_args, seed, callback=None, shape=(1, 4, 8, 8)):
    _, cfg = build_stack(base)
    return run_sampler(sampler, cfg, sigmas, extra_args, seed, callback=callback, shape=shape)


def sample_with_handoff(sampler, base, refiner, spec, sigmas, base_steps, extra_args, seed,
                        callback=None, log=None, shape=(1, 4, 8, 8), **options):
    sd_model, cfg = build_stack(base)
    slot = UNetSlot(sd_model.model, "diffusion_model")
    point = switch_point(sampler, sigmas, base_steps, eta=options.get("eta", 1.0))
    with unet_handoff(slot, refiner, point) as handoff:
        model = route_model(cfg, handoff, refiner_args(extra_args, spec))
        if log is not None:
            model = traced(model, log)
        out = run_sampler(sampler, model, sigmas, extra_args, seed, callback=callback, shape=shape, options=options)
    assert slot.get() is base
    assert not handoff.switch_missed
    return out


def automatic_sigmas(steps: int, schedule: str = "karras") -> torch.Tensor:
    _, cfg = build_stack(base_unet())
    return schedule_sigmas(schedule, cfg.inner_model, steps)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler", EXACT_SAMPLERS)
def test_zero_share_is_bit_identical_to_base_only(sampler: str, schedule: str) -> None:
    base, other = base_unet(), refiner_unet()
    sigmas = automatic_sigmas(8, schedule)
    plan = plan_switch(Settings(enabled=True, steps_percent=0), 8)
    for seed in (0, 1):
        expected = sample(sampler, base, sigmas, conds(), seed)
        out = sample_with_handoff(sampler, base, other, spec_of(other, "refiner"), sigmas, plan.base_steps, conds(), seed)
        assert torch.equal(out, expected)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sampler", EXACT_SAMPLERS)
def test_a_refiner_with_the_base_weights_is_bit_identical_to_base_only(sampler: str, schedule: str) -> None:
    base = base_unet()
    twin = copy.deepcopy(base)
    steps = 10
    sigmas = automatic_sigmas(steps, schedule)
    for seed in (0, 1):
        expected = sample(sampler, base, sigmas, conds(), seed)
        for base_steps in (0, 1, steps // 2, steps - 1):
            out = sample_with_handoff(sampler, base, twin, spec_of(twin, "base"), sigmas, base_steps, conds(), seed)
            assert torch.equal(out, expected), f"base steps {base_steps}, seed {seed}"


# k-diffusion's DPM++ 2M SDE and 3M SDE fail on a one-step schedule by themselves (UnboundLocalError).
FAILS_ON_ONE_STEP = frozenset({"dpmpp_2m_sde", "dpmpp_3m_sde"})


def trace_cases(sampler: str) -> list[tuple[int, int]]:
    step_counts = (2, 3, 20) if sampler in FAILS_ON_ONE_STEP else (1, 2, 3, 20)
    return sorted({(n, k) for n in step_counts for k in (0, 1, n // 2, n - 1, n) if 0 <= k <= n})


@pytest.mark.parametrize("schedule", ["automatic", "karras"])
@pytest.mark.parametrize("sampler", EXACT_SAMPLERS)
def test_every_call_of_steps_before_k_goes_to_the_base_and_from_k_to_the_refiner(sampler: str, schedule: str) -> None:
    for steps, base_steps in trace_cases(sampler):
        log: list[tuple[str, object]] = []
        base, refiner = NamedUNet(base_unet(), "base", log), NamedUNet(refiner_unet(), "refiner", log)
        sigmas = automatic_sigmas(steps, schedule)
        sample_with_handoff(sampler, base, refiner, spec_of(refiner.unet, "refiner"), sigmas, base_steps, conds(), 0,
                            callback=step_logger(log), log=log)
        calls = attribute_calls(log)
        case = f"{steps} steps, base steps {base_steps}"
        assert [call.unet for call in calls] == ["refiner" if call.step >= base_steps else "base" for call in calls], case
        per_step = Counter(call.step for call in calls)
        assert [per_step[i] for i in range(steps)] == calls_per_step(sampler, sigmas), case
        first_refiner_call = next((call for call in calls if call.unet == "refiner"), None)
        if base_steps < steps:
            assert first_refiner_call is not None and first_refiner_call.sigma == pytest.approx(float(sigmas[base_steps]))


@pytest.mark.parametrize("sampler", EXACT_SAMPLERS)
def test_a_refiner_with_other_weights_changes_the_run_only_from_step_k(sampler: str) -> None:
    steps, base_steps = 10, 6
    base, refiner = base_unet(), refiner_unet()
    sigmas = automatic_sigmas(steps)
    alone: list[dict] = []
    expected = sample(sampler, base, sigmas, conds(), 3, callback=alone.append)
    refined: list[dict] = []
    out = sample_with_handoff(sampler, base, refiner, spec_of(refiner, "refiner"), sigmas, base_steps, conds(), 3,
                              callback=refined.append)
    for step in range(base_steps + 1):
        assert torch.equal(refined[step]["x"], alone[step]["x"]), f"latent entering step {step}"
    for step in range(base_steps):
        assert torch.equal(refined[step]["denoised"], alone[step]["denoised"]), f"denoised at step {step}"
    assert not torch.equal(refined[base_steps]["denoised"], alone[base_steps]["denoised"])
    assert not torch.allclose(out, expected)


def test_and_prompts_with_a_larger_cond_batch_run_through_the_refiner() -> None:
    base, refiner = base_unet(), refiner_unet()
    sigmas = automatic_sigmas(6)
    out = sample_with_handoff("dpmpp_2m", base, refiner, spec_of(refiner, "refiner"), sigmas, 3, conds(cond_rows=6, uncond_rows=2), 0,
                              shape=(2, 4, 8, 8))
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["dpm_fast", "dpm_adaptive"])
def test_samplers_without_a_step_list_switch_once_where_sigma_reaches_step_k(sampler: str) -> None:
    steps, base_steps = 12, 7
    log: list[tuple[str, object]] = []
    base, refiner = NamedUNet(base_unet(), "base", log), NamedUNet(refiner_unet(), "refiner", log)
    sigmas = automatic_sigmas(steps)
    sample_with_handoff(sampler, base, refiner, spec_of(refiner.unet, "refiner"), sigmas, base_steps, conds(), 0, log=log)
    calls = [(value, name) for (_, value), (_, name) in zip(log[0::2], log[1::2], strict=True)]
    names = [name for _, name in calls]
    switched = names.index("refiner")
    assert set(names[:switched]) == {"base"} and set(names[switched:]) == {"refiner"}
    threshold = float(sigmas[base_steps])
    assert all(sigma > threshold for sigma, _ in calls[:switched])
    assert calls[switched][0] <= threshold * 1.002


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "dpmpp_3m_sde", "heun"])
def test_a_schedule_with_the_next_to_last_sigma_discarded_switches_at_step_k(sampler: str) -> None:
    steps, base_steps = 9, 5
    full = automatic_sigmas(steps + 1)
    sigmas = torch.cat([full[:-2], full[-1:]])
    log: list[tuple[str, object]] = []
    base, refiner = NamedUNet(base_unet(), "base", log), NamedUNet(refiner_unet(), "refiner", log)
    sample_with_handoff(sampler, base, refiner, spec_of(refiner.unet, "refiner"), sigmas, base_steps, conds(), 0,
                        callback=step_logger(log), log=log)
    calls = attribute_calls(log)
    assert [call.unet for call in calls] == ["refiner" if call.step >= base_steps else "base" for call in calls]


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2"])
def test_churn_raises_the_sigma_of_the_switch_call_but_not_the_step_it_switches_at(sampler: str) -> None:
    steps, base_steps = 8, 4
    sigmas = automatic_sigmas(steps)
    log: list[tuple[str, object]] = []
    base, refiner = NamedUNet(base_unet(), "base", log), NamedUNet(refiner_unet(), "refiner", log)
    sample_with_handoff(sampler, base, refiner, spec_of(refiner.unet, "refiner"), sigmas, base_steps, conds(), 0,
                        callback=step_logger(log), log=log, s_churn=4.0)
    calls = attribute_calls(log)
    assert [call.unet for call in calls] == ["refiner" if call.step >= base_steps else "base" for call in calls]
    first_refiner_call = next(call for call in calls if call.unet == "refiner")
    assert first_refiner_call.sigma > float(sigmas[base_steps]) * 1.01


@pytest.mark.parametrize("eta", [0.0, 3.0])
@pytest.mark.parametrize("sampler", ["dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_ancestral_second_order_samplers_switch_at_step_k_whatever_their_eta(sampler: str, eta: float) -> None:
    steps, base_steps = 10, 6
    sigmas = automatic_sigmas(steps)
    log: list[tuple[str, object]] = []
    base, refiner = NamedUNet(base_unet(), "base", log), NamedUNet(refiner_unet(), "refiner", log)
    sample_with_handoff(sampler, base, refiner, spec_of(refiner.unet, "refiner"), sigmas, base_steps, conds(), 0,
                        callback=step_logger(log), log=log, eta=eta)
    calls = attribute_calls(log)
    assert [call.unet for call in calls] == ["refiner" if call.step >= base_steps else "base" for call in calls]
    per_step = Counter(call.step for call in calls)
    assert [per_step[i] for i in range(steps)] == calls_per_step(sampler, sigmas, eta=eta)
    if eta > 1:
        assert 1 in calls_per_step(sampler, sigmas, eta=eta)[:-1]


@pytest.mark.parametrize("sampler", ["dpm_fast", "dpm_adaptive"])
def test_samplers_without_a_step_list_are_one_loop_too(sampler: str) -> None:
    base = base_unet()
    twin = copy.deepcopy(base)
    sigmas = automatic_sigmas(10)
    expected = sample(sampler, base, sigmas, conds(), 0)
    for base_steps in (0, 3, 6):
        out = sample_with_handoff(sampler, base, twin, spec_of(twin, "base"), sigmas, base_steps, conds(), 0)
        assert torch.equal(out, expected), f"base steps {base_steps}"
