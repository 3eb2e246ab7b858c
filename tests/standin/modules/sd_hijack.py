"""Stand-in of the parts of ``modules.sd_hijack`` (1.10.1) that change what a loaded model looks like.

At import, sgm's UNet ``forward`` is patched for SD UNets; ``model_hijack.hijack`` wraps each text
encoder's token embedding in ``EmbeddingsWithFixes`` (a ``wrapped`` child, as there: the loaded
model's state-dict keys then differ from the checkpoint's). Textual inversion itself is not
stood in for.
"""

from __future__ import annotations

import sgm.modules.diffusionmodules.openaimodel
import torch
from modules import sd_unet

sgm_original_forward = sgm.modules.diffusionmodules.openaimodel.UNetModel.forward
sgm_patched_forward = sd_unet.create_unet_forward(sgm_original_forward)
sgm.modules.diffusionmodules.openaimodel.UNetModel.forward = sgm_patched_forward
sd_unet.original_forward = sgm_original_forward


class EmbeddingsWithFixes(torch.nn.Module):
    def __init__(self, wrapped, embeddings=None, textual_inversion_key='clip_l'):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key

    @property
    def weight(self):
        return self.wrapped.weight

    def forward(self, input_ids):
        return self.wrapped(input_ids)


class StableDiffusionModelHijack:
    def hijack(self, m):
        for embedder in m.conditioner.embedders:
            owner = getattr(embedder, "model", None) or getattr(getattr(embedder, "transformer", None), "text_model", None)
            owner = getattr(owner, "embeddings", owner)
            if owner is not None and isinstance(getattr(owner, "token_embedding", None), torch.nn.Embedding):
                owner.token_embedding = EmbeddingsWithFixes(owner.token_embedding)


model_hijack = StableDiffusionModelHijack()
