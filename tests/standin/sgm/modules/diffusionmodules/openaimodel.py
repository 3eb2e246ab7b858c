"""Stand-in of ``sgm.modules.diffusionmodules.openaimodel``: ``UNetModel`` with sgm's layout.

A subclass of the test UNet, so that patching its ``forward`` (as ``modules.sd_hijack`` does to
sgm's class in 1.10.1) stays inside the stand-in, which is imported afresh for every test.
"""

from tests.support.sgm_unet import SgmUNet


class UNetModel(SgmUNet):
    pass
