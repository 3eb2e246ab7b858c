"""The Forge 2 binding (lllyasviel/stable-diffusion-webui-forge): the shared ``UnetPatcher`` route
as it is; Forge 2 is the host that route was written against."""

from __future__ import annotations

from sdxl_refiner.bindings.patcher import PatcherBinding


class ForgeBinding(PatcherBinding):
    host_name = "Forge"


BINDING = ForgeBinding()
