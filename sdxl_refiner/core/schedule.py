"""Where the refiner takes over: the number of base steps, and the model call at which it happens.

The contract: of the ``n`` steps run in a pass, steps ``0..k-1`` belong to the base
and steps ``k..n-1`` to the refiner. A step may make more than one model call, so the switch is
placed by counting calls the way each k-diffusion sampler makes them, never by sigma alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from k_diffusion.sampling import get_ancestral_step

from sdxl_refiner.core.errors import PlanError, SettingsError
from sdxl_refiner.core.settings import Settings

ONE_CALL_SAMPLERS = frozenset({"euler", "euler_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"})
SECOND_ORDER_SAMPLERS = frozenset({"heun", "dpm_2", "dpmpp_sde"})
SECOND_ORDER_ANCESTRAL_SAMPLERS = frozenset({"dpm_2_ancestral", "dpmpp_2s_ancestral"})
SIGMA_THRESHOLD_SAMPLERS = frozenset({"dpm_fast", "dpm_adaptive"})
EXACT_SAMPLERS = ONE_CALL_SAMPLERS | SECOND_ORDER_SAMPLERS | SECOND_ORDER_ANCESTRAL_SAMPLERS
SUPPORTED_SAMPLERS = EXACT_SAMPLERS | SIGMA_THRESHOLD_SAMPLERS


def refiner_step_count(steps: int, percent: float) -> int:
    """Refiner steps for a share of ``percent`` % of ``steps``.

    Rounds ``steps * percent / 100`` half up, exactly as JavaScript's ``Math.round`` does, so
    that the live line in the UI and the plan always agree; Python's ``round`` would round
    halves to even (25 steps at 10 % would give 2 instead of 3). A share above 0 always buys at
    least one step, otherwise a small share of few steps would silently do nothing.
    """
    _check_steps(steps)
    if isinstance(percent, bool) or not isinstance(percent, numbers.Real) or not 0 <= percent <= 100:
        raise SettingsError(
            f"Refiner steps %: {percent!r} is not a number from 0 to 100. "
            "Give the share of the sampling steps the refiner runs, e.g. 20."
        )
    exact = steps * percent / 100
    count = math.floor(exact)
    if exact - count >= 0.5:
        count += 1
    if percent > 0:
        count = max(count, 1)
    return min(count, steps)


@dataclass(frozen=True)
class SwitchPlan:
    """The split of one sampling pass: ``base_steps`` of ``steps`` go to the base."""

    steps: int
    base_steps: int
    notes: tuple[str, ...] = ()

    @property
    def refiner_steps(self) -> int:
        return self.steps - self.base_steps

    @property
    def active(self) -> bool:
        return self.refiner_steps > 0


def plan_switch(settings: Settings, steps: int) -> SwitchPlan:
    """Split the ``steps`` actually run in this pass (img2img and hires passes run fewer).

    When more than one step field is set, ``start_step`` wins over ``start_step_percentage``,
    which wins over ``steps_percent``: the absolute step is the explicit override in the UI.
    ``start_step_percentage`` ``q`` is defined as a refiner share of ``100 - q`` through
    :func:`refiner_step_count`, so that "start at 90 %" and "refiner 10 %" always give the same
    split; rounding ``n * q / 100`` directly would differ at halves (25 steps: 22.5 -> 23 base
    steps, against 3 refiner steps from 10 %).
    """
    _check_steps(steps)
    steps = int(steps)
    if not settings.enabled:
        return SwitchPlan(steps, steps)
    notes: list[str] = []
    if settings.start_step is not None:
        base_steps = _base_steps_from_start_step(settings.start_step, steps, notes)
    elif settings.start_step_percentage is not None:
        base_steps = steps - refiner_step_count(steps, _start_percentage(settings.start_step_percentage))
    elif settings.steps_percent is not None:
        base_steps = steps - refiner_step_count(steps, settings.steps_percent)
    else:
        raise SettingsError(
            "SDXL Refiner is enabled but none of steps_percent, start_step, start_step_percentage is set. "
            "Set exactly one of them, e.g. steps_percent=20."
        )
    if base_steps == 0:
        if steps == 1:
            notes.append("This pass runs 1 step: the refiner runs it, the base runs none.")
        else:
            notes.append(
                f"The refiner runs all {steps} steps and the base none: a refiner cannot compose an image "
                "from noise, so expect a poor result. A share of 10-30 % is usual."
            )
    return SwitchPlan(steps, base_steps, tuple(notes))


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise SettingsError(f"steps: {steps!r} is not a whole number of at least 1. Run at least one sampling step.")


def _start_percentage(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 100:
        raise SettingsError(
            f"start_step_percentage: {value!r} is not a number from 0 to 100. "
            "Give the share of the steps the base runs before the refiner starts, e.g. 80."
        )
    return 100 - value


def _base_steps_from_start_step(start_step: int, steps: int, notes: list[str]) -> int:
    if isinstance(start_step, bool) or not isinstance(start_step, numbers.Integral) or start_step < 0:
        raise SettingsError(
            f"start_step: {start_step!r} is not a whole number of at least 0. "
            "Give the number of steps the base runs before the refiner takes over."
        )
    if start_step >= steps:
        notes.append(
            f"start_step {start_step} is at or past the end of the {steps} steps of this pass; "
            f"the refiner runs the last step only (start_step {steps - 1})."
        )
        return steps - 1
    return int(start_step)


@dataclass(frozen=True)
class SwitchPoint:
    """The first model call that goes to the refiner.

    ``call_index`` (from 0) places it exactly for samplers with a step list. ``sigma`` places it
    for samplers without one: the first call whose sigma is at or below it. Both ``None``: the
    base runs the whole pass. ``expected_sigma`` is the sigma the call at ``call_index`` must
    have, so that a plan made for other sigmas than the sampler really uses fails loudly
    instead of switching at a wrong step; ``sampler`` and ``base_steps`` make that message clear.
    """

    call_index: int | None
    sigma: float | None
    expected_sigma: float | None = None
    base_steps: int | None = None
    sampler: str | None = None

    @property
    def never(self) -> bool:
        return self.call_index is None and self.sigma is None


NEVER = SwitchPoint(None, None)


def sampler_key(sampler: str | Callable[..., object]) -> str:
    """k-diffusion's function name without ``sample_``.

    Hosts name samplers differently: the WebUI stores ``sample_euler``, or the function itself
    for samplers of its own (Restart), which then fail as unknown by their function's name.
    """
    name = sampler if isinstance(sampler, str) else getattr(sampler, "__name__", repr(sampler))
    return name.removeprefix("sample_")


def calls_per_step(sampler: str | Callable[..., object], sigmas: torch.Tensor, *, eta: float = 1.0) -> list[int]:
    """Model calls each step makes, mirroring each sampler's own branch for its last step.

    Heun, DPM2 and DPM++ SDE skip their second call when the step ends at sigma 0; the
    ancestral second-order samplers skip it when ``sigma_down`` is 0, which depends on ``eta``
    (above 1 it can reach 0 before the last step), so it is computed as they compute it.
    """
    name = sampler_key(sampler)
    count = len(sigmas) - 1
    if name in ONE_CALL_SAMPLERS:
        return [1] * count
    if name in SECOND_ORDER_SAMPLERS:
        return [1 if sigmas[i + 1] == 0 else 2 for i in range(count)]
    if name in SECOND_ORDER_ANCESTRAL_SAMPLERS:
        return [1 if get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)[0] == 0 else 2 for i in range(count)]
    if name in SIGMA_THRESHOLD_SAMPLERS:
        raise PlanError(
            f"sampler {sampler_key(sampler)!r} has no fixed list of steps, so its model calls cannot be counted per step; "
            "use switch_point, which switches it by sigma."
        )
    raise _unknown_sampler(sampler)


def switch_point(sampler: str | Callable[..., object], sigmas: torch.Tensor, base_steps: int, *, eta: float = 1.0) -> SwitchPoint:
    """Where to switch for ``sampler`` running over ``sigmas`` (the schedule actually used).

    DPM fast and DPM adaptive choose their own sigmas, so they switch at the first call whose
    sigma is at or below ``sigmas[base_steps]``: the sigma at which step ``base_steps`` would
    start in the ``n``-step schedule, which is as close to the step boundary as they allow.
    Their calls spread evenly in log sigma between the schedule's first and last nonzero sigma,
    so with a schedule dense at low sigma (Karras) and few steps, a small share can fall below
    their last call: the refiner then never runs, which ``Handoff.switch_missed`` reports.
    """
    name = sampler_key(sampler)
    if name not in SUPPORTED_SAMPLERS:
        raise _unknown_sampler(sampler)
    steps = len(sigmas) - 1
    _check_base_steps(base_steps, steps)
    if base_steps == steps:
        return NEVER
    if name in SIGMA_THRESHOLD_SAMPLERS:
        if base_steps == 0:
            return SwitchPoint(0, None)
        return SwitchPoint(None, float(sigmas[base_steps]))
    point = switch_point_from_calls(calls_per_step(name, sigmas, eta=eta), base_steps, sigmas)
    return SwitchPoint(point.call_index, None, point.expected_sigma, base_steps, name)


def switch_point_from_calls(
    calls: Sequence[int], base_steps: int, sigmas: torch.Tensor | None = None
) -> SwitchPoint:
    """The switch for any sampler whose calls per step are known: after all calls of the base steps."""
    _check_base_steps(base_steps, len(calls))
    if base_steps == len(calls):
        return NEVER
    expected = None if sigmas is None else float(sigmas[base_steps])
    return SwitchPoint(sum(calls[:base_steps]), None, expected, base_steps)


def _check_base_steps(base_steps: int, steps: int) -> None:
    if not 0 <= base_steps <= steps:
        raise PlanError(
            f"base steps {base_steps} is outside 0..{steps} for a schedule of {steps} steps; "
            "plan the switch with the steps this pass really runs."
        )


def _unknown_sampler(sampler: str | Callable[..., object]) -> PlanError:
    allowed = ", ".join(sorted(SUPPORTED_SAMPLERS))
    return PlanError(
        f"sampler {sampler_key(sampler)!r} is not one the SDXL Refiner can switch exactly. Allowed: {allowed}. "
        "Pick one of these samplers, or turn the refiner off for this one."
    )
