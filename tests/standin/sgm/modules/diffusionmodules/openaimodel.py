"""Stand-in of ``sgm.modules.diffusionmodules.openaimodel``: ``UNetModel`` with sgm's layout."""

from tests.support.sgm_unet import SgmUNet as UNetModel  # noqa: F401
