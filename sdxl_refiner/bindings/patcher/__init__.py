"""The refiner inside the sampling of a host with Forge's ``backend``: through its ``UnetPatcher``.

Forge 2 and Forge Neo keep the WebUI's ``modules`` surface for scripts (the shared layer serves
them as it serves the WebUI) but sample through their own ``backend``. The pass is planned exactly
as in the WebUI (the sampler's function is the same k-diffusion function, called once per pass
with the sigmas it runs), and the sampler's model argument counts the calls. The UNet changes
through the host's own ``UnetPatcher``: this pass's patcher is a clone of the base's with a
conditioning modifier that hands the refiner's ``KModel`` and conds to the sampling function from
the switch on, and the refiner's patcher added as a model to load during sampling, so that the
host's memory management places both. The base's patcher, its LoRAs and other patches are never
touched: the host restores ``forge_objects`` from its own copy for every pass.

``PatcherBinding`` is what both hosts share; ``bindings.forge`` and ``bindings.neo`` name the host
and hold what differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdxl_refiner.bindings.patcher import loading, loras
from sdxl_refiner.bindings.patcher.own_text import FORGE_SLOT
from sdxl_refiner.bindings.patcher.routing import RefinerRoute, conditioning_modifier
from sdxl_refiner.core.checkpoint import SCALAR_EMBED_DIM, CheckpointInfo
from sdxl_refiner.core.handoff import UNetSlot
from sdxl_refiner.host import prompts
from sdxl_refiner.host.binding import PassRoute
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.resources import unload_cached_refiners
from sdxl_refiner.host.run_state import RefinerRun


@dataclass
class PatcherRefiner:
    """The binding's handle on one generation's refiner: its ``UnetPatcher``, and the route the
    conditioning modifier of the current pass reads."""

    patcher: Any
    route: RefinerRoute | None = None


class PatcherBinding:
    host_name = "Forge"
    encoder_slot = FORGE_SLOT
    encode_prompts = staticmethod(prompts.encode)

    def register_callbacks(self) -> None:
        """Nothing to register: the conds are converted by the patcher's modifier, not by a callback."""

    def check_base(self, sd_model) -> None:
        loading.require_sdxl_base(sd_model)

    def check_refiner(self, p, run: RefinerRun, chosen: ChosenRefiner) -> None:
        loading.refuse_other_prediction(chosen)

    def scalar_embed_dim(self, sd_model, info: CheckpointInfo) -> int:
        """The host's SDXL engines embed each size and score scalar as sgm does (``Timestep(256)``)."""
        return SCALAR_EMBED_DIM

    def load_refiner(self, p, run: RefinerRun, chosen: ChosenRefiner) -> None:
        run.refiner = PatcherRefiner(loading.refiner_patcher(chosen, run.file_hash.digest))

    def before_pass(self, p, run: RefinerRun) -> None:
        """After the host has set this pass's patcher and before it loads the models: the refined
        pass samples on a clone that carries the refiner."""
        sd_model = p.sd_model
        patchers = loras.with_loras(run.refiner.patcher, sd_model.forge_objects_original.clip, run.loras)

        def encode(model, job: prompts.PromptJob) -> tuple:
            if job.loras is None:
                return self.encode_prompts(model, job)
            with loras.encoding_with(model, patchers.clip):
                return self.encode_prompts(model, job)

        # The refiner's own conds are encoded (and cached for the pass) now, before the host loads
        # the pass's UNets: loading the text encoders inside the loop could push those out again.
        prompts.refiner_conds(p, run, encode)
        unet = sd_model.forge_objects.unet.clone()
        route = RefinerRoute(
            model=unet.model, scores=(run.settings.aesthetic_score, run.settings.negative_aesthetic_score), spec=run.spec
        )
        unet.add_conditioning_modifier(conditioning_modifier(route))
        unet.add_extra_model_patcher_during_sampling(patchers.unet)
        sd_model.forge_objects.unet = unet
        run.refiner.route = route

    @contextmanager
    def pass_route(self, p, run: RefinerRun) -> Iterator[PassRoute]:
        route = run.refiner.route

        def started(handoff) -> None:
            route.handoff = handoff

        def ended() -> None:
            route.handoff = None

        yield PassRoute(UNetSlot(route, "model"), run.refiner.patcher.model, started=started, ended=ended)

    def unload(self) -> Sequence[str]:
        """The host's loaded-model list holds every patcher it placed until it needs the memory for
        another: the refiner's are unloaded there too, or dropping them from the cache would free nothing."""
        loading.release_from_forge()
        return unload_cached_refiners()
