"""The Forge Neo binding (Haoming02/sd-webui-forge-classic, branch ``neo``): Forge 2's ``UnetPatcher``
route, with what Neo changed in the surface it shares with Forge 2.

- Its prompt parser has no "old prompt editing timelines" option: it takes one argument fewer.
"""

from __future__ import annotations

import functools

from sdxl_refiner.bindings.patcher import PatcherBinding
from sdxl_refiner.host import prompts


class NeoBinding(PatcherBinding):
    host_name = "Forge Neo"
    encode_prompts = staticmethod(functools.partial(prompts.encode, scheduling_option=False))


BINDING = NeoBinding()
