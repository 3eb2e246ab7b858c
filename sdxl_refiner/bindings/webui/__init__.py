"""The WebUI 1.10 binding: the refiner UNet swapped into ``sd_model.model.diffusion_model``.

The WebUI samples through k-diffusion with its own CFG denoiser, so the refiner takes the UNet's
slot from the switch on, its conds are converted call by call in the ``on_cfg_denoiser`` callback
(``conds``), the WebUI's memory modes see it as the UNet they manage (``memory``), and it is
built from the config the WebUI builds the same file with (``model_config``, ``unet``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sdxl_refiner.bindings.webui import conds, loras, unet
from sdxl_refiner.bindings.webui.memory import MemoryModeMoves
from sdxl_refiner.bindings.webui.own_text import WEBUI_SLOT
from sdxl_refiner.core.checkpoint import CheckpointInfo
from sdxl_refiner.core.handoff import UNetSlot
from sdxl_refiner.core.residency import OffloadedRefiner
from sdxl_refiner.host import checkpoints, prompts
from sdxl_refiner.host.binding import PassRoute
from sdxl_refiner.host.callbacks import register_once
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.resources import unload_cached_refiners
from sdxl_refiner.host.run_state import RefinerRun


class WebUIBinding:
    host_name = "the WebUI"
    encoder_slot = WEBUI_SLOT

    @staticmethod
    def encode_prompts(sd_model, job: prompts.PromptJob) -> tuple:
        if job.loras is None:
            return prompts.encode(sd_model, job)
        with loras.text_encoder_set(job.loras):
            return prompts.encode(sd_model, job)

    def register_callbacks(self) -> None:
        from modules import script_callbacks

        register_once(script_callbacks.on_cfg_denoiser, conds.on_cfg_denoiser, "sdxl_refiner_conds")

    def check_base(self, sd_model) -> None:
        checkpoints.require_sdxl_base(sd_model)

    def check_refiner(self, p, run: RefinerRun, chosen: ChosenRefiner) -> None:
        run.refiner = unet.WebUIRefiner(unet.unet_config_for(chosen))

    def scalar_embed_dim(self, sd_model, info: CheckpointInfo) -> int:
        return unet.scalar_embed_dim(sd_model, info)

    def load_refiner(self, p, run: RefinerRun, chosen: ChosenRefiner) -> None:
        refiner: unet.WebUIRefiner = run.refiner
        refiner.storage = unet.storage_plan(int(chosen.info.path.stat().st_size))
        refiner.pending = unet.start_loading(chosen, refiner.storage, refiner.host_config, run.file_hash.digest)

    def before_pass(self, p, run: RefinerRun) -> None:
        """Nothing before the sampling call: the slot is swapped inside it."""

    @contextmanager
    def pass_route(self, p, run: RefinerRun) -> Iterator[PassRoute]:
        from modules import shared

        refiner: unet.WebUIRefiner = run.refiner
        sd_model = p.sd_model
        source, offloaded, storage_device = refiner.pending.result, None, refiner.storage.storage_device
        if refiner.storage.prefetch and not getattr(sd_model, "lowvram", False):
            # copied to the GPU on a side stream while the base samples; the cached RAM copy stays put
            offloaded = OffloadedRefiner(refiner.pending, refiner.storage.compute_device)
            offloaded.start()
            source, storage_device = offloaded.at_switch, refiner.storage.compute_device
        moves = MemoryModeMoves(sd_model, sd_model.model.diffusion_model, storage_device)
        lora_set = loras.RefinerSet(sd_model, run.loras)
        empty = conds.refiner_empty_prompt(conds.base_empty_prompt(shared.sd_model), run.spec)

        def on_switch(refiner_unet) -> None:
            moves.on_switch(refiner_unet)
            lora_set.on_switch(refiner_unet)

        def ended() -> None:
            try:
                lora_set.ended()
            finally:
                moves.restore()

        try:
            yield PassRoute(
                UNetSlot(sd_model.model, "diffusion_model"), source, on_switch=on_switch,
                ended=ended, empty_prompt=empty,
            )
        finally:
            if offloaded is not None:
                offloaded.release()

    def unload(self) -> Sequence[str]:
        return unload_cached_refiners()


BINDING = WebUIBinding()
