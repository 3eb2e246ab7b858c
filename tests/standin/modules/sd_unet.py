"""Stand-in of ``modules.sd_unet`` (1.10.1): an "SD UNet" (e.g. TensorRT) replaces every sgm UNet's forward.

``current_unet`` set: ``UNetModel.forward`` (patched by ``modules.sd_hijack``) calls it instead of
the module's own weights, for every instance of the class.
"""

from __future__ import annotations

current_unet = None
original_forward = None


class SdUnet:
    def forward(self, x, timesteps, context, *args, **kwargs):
        raise NotImplementedError()

    def activate(self):
        pass

    def deactivate(self):
        pass


def create_unet_forward(original_forward):
    def UNetModel_forward(self, x, timesteps=None, context=None, *args, **kwargs):
        if current_unet is not None:
            return current_unet.forward(x, timesteps, context, *args, **kwargs)
        return original_forward(self, x, timesteps, context, *args, **kwargs)

    return UNetModel_forward
