"""Stand-in of the part of ``modules.sd_hijack`` (1.10.1) that patches sgm's UNet class at import."""

from __future__ import annotations

import sgm.modules.diffusionmodules.openaimodel
from modules import sd_unet

sgm_original_forward = sgm.modules.diffusionmodules.openaimodel.UNetModel.forward
sgm_patched_forward = sd_unet.create_unet_forward(sgm_original_forward)
sgm.modules.diffusionmodules.openaimodel.UNetModel.forward = sgm_patched_forward
sd_unet.original_forward = sgm_original_forward
