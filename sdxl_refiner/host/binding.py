"""The one interface a host binding gives the shared layer: what differs between the hosts.

Everything else (the panel, settings, the plan, infotext, the sampler's wrapper, the refiner's
prompts) is written once in ``sdxl_refiner.host`` and reads as if there were one host. A binding is
stateless: what belongs to a generation lives on the run (``RefinerRun.refiner``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sdxl_refiner.core.checkpoint import CheckpointInfo
from sdxl_refiner.core.handoff import Handoff, RefinerSource, UNetSlot
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.prompts import PromptJob
from sdxl_refiner.host.run_state import RefinerRun
from sdxl_refiner.host.text_encoder import EncoderSlot


@dataclass
class PassRoute:
    """Where one refined pass swaps the UNet, set up by the binding for that pass.

    ``slot`` holds the base until the switch and ``refiner`` (or a function that returns it, called
    at the switch) after it; ``on_switch`` places the refiner just before it enters the slot.
    ``started``/``ended`` see the handoff begin and end (``ended`` before the base is back).
    ``empty_prompt``: the refiner-width empty prompt, for a binding that pads conds with it.
    """

    slot: UNetSlot
    refiner: RefinerSource
    on_switch: Callable[[Any], None] | None = None
    started: Callable[[Handoff], None] | None = None
    ended: Callable[[], None] | None = None
    empty_prompt: Any = None


class HostBinding(Protocol):
    """One WebUI-family host, as the shared layer needs it."""

    # the host's name in messages, e.g. "the WebUI" or "Forge"
    host_name: str
    # where the refiner's own text encoder goes when it is not the base's
    encoder_slot: EncoderSlot

    def register_callbacks(self) -> None:
        """Host callbacks of the binding's own, registered once per script load."""

    def check_base(self, sd_model: Any) -> None:
        """Refuses a loaded model the refiner cannot follow."""

    def check_refiner(self, p: Any, run: RefinerRun, chosen: ChosenRefiner) -> None:
        """Refuses, before any step, a refiner file this host would build wrongly; what it read to
        decide (the WebUI: the config the UNet is built from) may be kept on ``run.refiner`` for
        ``load_refiner``."""

    def scalar_embed_dim(self, sd_model: Any, info: CheckpointInfo) -> int:
        """Width of one embedded size or score scalar in this host's SDXL conditioning."""

    def load_refiner(self, p: Any, run: RefinerRun, chosen: ChosenRefiner) -> None:
        """Starts loading the refiner's UNet (or finds it cached); sets ``run.refiner``."""

    def encode_prompts(self, sd_model: Any, job: PromptJob) -> tuple:
        """(cond, uncond) for ``job`` with the host's prompt machinery."""

    def before_pass(self, p: Any, run: RefinerRun) -> None:
        """From ``process_before_every_sampling`` of a refined pass, before its sampler is wrapped."""

    def pass_route(self, p: Any, run: RefinerRun) -> AbstractContextManager[PassRoute]:
        """The pass's slot and refiner, inside the sampling call; released on every exit."""

    def unload(self) -> Sequence[str]:
        """Frees the cached refiner UNets wherever the host holds them; names their files."""
