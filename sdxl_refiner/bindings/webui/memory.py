"""The refiner UNet under the WebUI's memory modes, at the switch and back.

With --medvram / --lowvram the WebUI tracks one module on the GPU (``modules.lowvram``) through
forward pre-hooks; moving the base by hand behind them would desynchronise that bookkeeping.
So the base is never moved here: the WebUI's own ``send_everything_to_cpu`` empties the GPU,
and the refiner is made to look to those hooks exactly like the UNet they manage.
"""

from __future__ import annotations

import torch

from sdxl_refiner.core.residency import put_back, tensor_snapshot

UNET_BLOCK_FIELDS = ("input_blocks", "middle_block", "output_blocks", "time_embed")


def _blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [unet.time_embed, *unet.input_blocks, unet.middle_block, *unet.output_blocks]


def _lowvram_hook(base_unet: torch.nn.Module):
    """The WebUI's ``send_me_to_gpu`` as registered on the base's blocks (one closure per model)."""
    for block in _blocks(base_unet):
        for hook in block._forward_pre_hooks.values():
            return hook
    return None


def _to_device_without_blocks(unet: torch.nn.Module, device: torch.device) -> None:
    """Moves what is outside the blocks (label_emb, out), as ``setup_for_low_vram`` places the base."""
    stored = {name: getattr(unet, name) for name in UNET_BLOCK_FIELDS}
    for name in UNET_BLOCK_FIELDS:
        setattr(unet, name, None)
    try:
        unet.to(device)
    finally:
        for name, module in stored.items():
            setattr(unet, name, module)


class MemoryModeMoves:
    """Puts the refiner where the host's memory mode needs it at the switch, and back afterwards.

    ``storage_device``: where the cache keeps the refiner between passes.
    """

    def __init__(self, sd_model, base_unet: torch.nn.Module, storage_device: str):
        from modules import shared

        self.sd_model = sd_model
        self.base_unet = base_unet
        self.storage_device = torch.device(storage_device)
        self.lowvram_mode = bool(getattr(sd_model, "lowvram", False))
        self.block_by_block = self.lowvram_mode and bool(getattr(shared.cmd_opts, "lowvram", False))
        self.refiner: torch.nn.Module | None = None
        self.kept: dict[str, torch.Tensor] | None = None
        self.hook_handles: list = []
        self.sd_unet_bypassed: list = []

    def on_switch(self, refiner: torch.nn.Module) -> None:
        from modules import devices, lowvram

        self.refiner = refiner
        self._bypass_sd_unet()
        if "dtype" in vars(self.base_unet):
            refiner.dtype = self.base_unet.dtype  # the WebUI reads diffusion_model.dtype (extend_sdxl sets it)
        device = torch.device(devices.device)
        if self.lowvram_mode or self.storage_device != device:
            self.kept = tensor_snapshot(refiner)
        if not self.lowvram_mode:
            if self.storage_device != device:
                refiner.to(device)
            return
        lowvram.send_everything_to_cpu()
        if not self.block_by_block:
            return  # --medvram: the hook on sd_model.model moves the model, refiner inside, on the next call
        hook = _lowvram_hook(self.base_unet)
        if hook is None:
            return
        self.hook_handles = [block.register_forward_pre_hook(hook) for block in _blocks(refiner)]
        _to_device_without_blocks(refiner, device)

    def _bypass_sd_unet(self) -> None:
        """An active "SD UNet" (TensorRT & co.) answers for every sgm UNet, the refiner included:
        it stands for the base's weights, so refiner calls must reach the refiner's own forward."""
        try:
            from modules import sd_unet
        except ImportError:
            return
        if getattr(sd_unet, "current_unet", None) is not None:
            self.sd_unet_bypassed.append(sd_unet.current_unet)
            sd_unet.current_unet = None

    def _restore_sd_unet(self) -> None:
        if self.sd_unet_bypassed:
            from modules import sd_unet

            sd_unet.current_unet = self.sd_unet_bypassed.pop()

    def restore(self) -> None:
        """Before the base goes back into its slot: the refiner leaves the GPU, its hooks go, and it
        points at the tensors the cache keeps (pinned RAM stays pinned; nothing is copied back)."""
        from modules import lowvram

        self._restore_sd_unet()
        if self.refiner is None:
            return
        if self.lowvram_mode:
            lowvram.send_everything_to_cpu()
        for handle in self.hook_handles:
            handle.remove()
        self.hook_handles = []
        if self.kept is not None:
            put_back(self.refiner, self.kept)
        self.refiner = None
        self.kept = None
