"""Routes each model call of one sampling loop to the base or the refiner UNet, and puts the base back.

The sampler keeps running with its own state (multistep history, Brownian noise); only the UNet
in the model's slot changes, once, at the planned call. Nothing here knows the host: the caller
names the slot (e.g. ``UNetSlot(sd_model.model, "diffusion_model")``) and wraps the sampler's
model argument with :func:`route_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from sdxl_refiner.core.errors import Cause, PlanError
from sdxl_refiner.core.schedule import SwitchPoint

RefinerSource = torch.nn.Module | Callable[[], torch.nn.Module]

# Sigmas reach the model rounded to the latent's dtype (bf16 keeps 8 bits), and DPM fast and
# adaptive reach them through exp(-t): compare within that rounding, well inside one step.
SIGMA_RELATIVE_TOLERANCE = 5e-3
# With s_churn > 0, Euler, Heun and DPM2 call the model at sigma * (1 + gamma), gamma <= sqrt(2) - 1.
MAX_CHURN_FACTOR = 2**0.5


class UNetSlot:
    """The attribute through which the host's model reaches its UNet."""

    def __init__(self, owner: torch.nn.Module, attr: str) -> None:
        if not hasattr(owner, attr):
            raise AttributeError(f"{type(owner).__name__} has no attribute {attr!r} to hold a UNet")
        self.owner = owner
        self.attr = attr

    def get(self) -> torch.nn.Module:
        return getattr(self.owner, self.attr)

    def set(self, module: torch.nn.Module) -> None:
        setattr(self.owner, self.attr, module)


class Handoff:
    """Decides, call by call, whether the model call goes to the refiner; swaps the slot once.

    It counts calls itself because the host's own counters lag or are reset per pass (the
    WebUI's ``CFGDenoiserParams.sampling_step`` is set in the sampler callback, after the first
    call of a step, and its ``total_steps`` doubles for second-order samplers although Heun makes
    ``2n - 1`` calls). Latched: after the switch every call of the pass goes to the refiner.
    """

    def __init__(
        self,
        slot: UNetSlot,
        refiner: RefinerSource,
        point: SwitchPoint,
        on_switch: Callable[[torch.nn.Module], None] | None = None,
    ) -> None:
        self.slot = slot
        self.base = slot.get()
        self.point = point
        self.calls = 0
        self.on_refiner = False
        self.switched_at_call: int | None = None
        self._refiner = refiner
        self._on_switch = on_switch
        self._closed = False

    def before_call(self, sigma: torch.Tensor | float) -> bool:
        """Account for one model call at ``sigma``; True when it goes to the refiner.

        After :meth:`restore` every call stays on the base: a routed model kept past its pass
        must not swap the refiner back in.
        """
        if self._closed:
            return False
        index = self.calls
        self.calls += 1
        if self.on_refiner:
            return True
        if not self._switches_here(index, sigma):
            return False
        refiner = self._resolve_refiner()
        if self._on_switch is not None:
            self._on_switch(refiner)
        self.slot.set(refiner)
        self.on_refiner = True
        self.switched_at_call = index
        return True

    @property
    def switch_missed(self) -> bool:
        """A switch was planned but no call reached it: the pass ended early (interrupt, skip), or a
        sampler without a step list never came down to the switch sigma (DPM fast keeps its calls
        above the schedule's last sigmas). The host should tell the user the refiner did not run."""
        return not self.point.never and self.switched_at_call is None

    def restore(self) -> None:
        """Put the base back in its slot and end the pass; safe to call more than once."""
        self._closed = True
        if self.slot.get() is not self.base:
            self.slot.set(self.base)
        self.on_refiner = False

    def _switches_here(self, index: int, sigma: torch.Tensor | float) -> bool:
        point = self.point
        if point.call_index is not None:
            if index != point.call_index:
                return False
            if point.expected_sigma is not None:
                self._check_sigma(index, _first_value(sigma), point.expected_sigma)
            return True
        if point.sigma is not None:
            return _first_value(sigma) <= point.sigma * (1 + SIGMA_RELATIVE_TOLERANCE)
        return False

    def _check_sigma(self, index: int, sigma: float, expected: float) -> None:
        low = expected * (1 - SIGMA_RELATIVE_TOLERANCE)
        high = expected * MAX_CHURN_FACTOR * (1 + SIGMA_RELATIVE_TOLERANCE)
        if low <= sigma <= high:
            return
        sampler = self.point.sampler or "this sampler"
        raise PlanError(
            f"The refiner was planned to take over at step {self.point.base_steps} (model call {index}) "
            f"of {sampler}, at sigma {expected:.6g}, but that call came at sigma {sigma:.6g}. "
            "The plan was made for other steps or another schedule than the sampler runs; "
            "the base was kept in place. Report the sampler and scheduler used.",
            Cause.CONFLICT,
        )

    def _resolve_refiner(self) -> torch.nn.Module:
        if isinstance(self._refiner, torch.nn.Module):
            return self._refiner
        self._refiner = self._refiner()
        return self._refiner


def _first_value(sigma: torch.Tensor | float) -> float:
    if isinstance(sigma, torch.Tensor):
        return float(sigma.reshape(-1)[0])
    return float(sigma)


@contextmanager
def unet_handoff(
    slot: UNetSlot,
    refiner: RefinerSource,
    point: SwitchPoint,
    *,
    on_switch: Callable[[torch.nn.Module], None] | None = None,
) -> Iterator[Handoff]:
    """Run one sampling pass with a handoff; the base is back in its slot however the pass ends.

    ``refiner`` may be a callable that returns the module: it is called only at the switch, so
    a load started in the background is waited for as late as possible, and never when the
    pass ends (or fails) before the switch. ``on_switch`` runs with the refiner just before it
    enters the slot (a host can place it on the device there).
    """
    handoff = Handoff(slot, refiner, point, on_switch)
    try:
        yield handoff
    finally:
        handoff.restore()


class RoutedModel:
    """The sampler's model, seen through the handoff; every other attribute is the model's own."""

    def __init__(self, model: Any, handoff: Handoff, refiner_extra_args: Mapping[str, object] | None) -> None:
        self.inner = model
        self.handoff = handoff
        self.refiner_extra_args = dict(refiner_extra_args or {})

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, *args: Any, **extra_args: Any) -> Any:
        if self.handoff.before_call(sigma) and self.refiner_extra_args:
            extra_args = {**extra_args, **self.refiner_extra_args}
        return self.inner(x, sigma, *args, **extra_args)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "handoff", "refiner_extra_args"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def route_model(model: Any, handoff: Handoff, refiner_extra_args: Mapping[str, object] | None = None) -> RoutedModel:
    """Wrap the model a k-diffusion sampler calls, so the handoff sees every call.

    ``refiner_extra_args`` replace the sampler's keyword arguments of those names on refiner
    calls (the refiner's conds, for a host that passes conds that way).
    """
    return RoutedModel(model, handoff, refiner_extra_args)
