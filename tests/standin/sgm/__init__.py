"""Stand-in of generative-models' ``sgm`` as the WebUI 1.10.1 uses it for SDXL, in miniature.

The UNet is ``tests.support.sgm_unet.SgmUNet`` (sgm's state-dict layout). Text encoders are
small deterministic modules under the parameter names of the real ones, so checkpoints written
from these models classify like real SDXL base and refiner files.
"""
