"""Stand-ins of sgm's conditioner and embedders, small and deterministic.

Tokens are words (split on spaces and commas) hashed into a vocabulary; 75 tokens per chunk of
77 positions, so prompts longer than 75 words give longer conds, as in the WebUI. Parameter
names follow the real encoders (``transformer.text_model.*`` for CLIP ViT-L,
``model.ln_final`` / ``model.text_projection`` for OpenCLIP ViT-bigG).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import ClassVar

import torch
from torch import nn

from tests.support.sgm_unet import timestep_embedding

CHUNK_TOKENS = 75
CHUNK_LENGTH = CHUNK_TOKENS + 2


def tokenize(text: str, vocab: int) -> list[list[int]]:
    words = [word for word in re.split(r"[\s,]+", text) if word]
    ids = [1 + zlib.crc32(word.encode("utf8")) % (vocab - 3) for word in words]
    chunks = max(1, math.ceil(len(ids) / CHUNK_TOKENS))
    begin, end = vocab - 2, vocab - 1
    out = []
    for index in range(chunks):
        part = ids[index * CHUNK_TOKENS:(index + 1) * CHUNK_TOKENS]
        out.append([begin, *part, *([end] * (CHUNK_LENGTH - 1 - len(part)))])
    return out


class AbstractEmbModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.is_trainable = False
        self.ucg_rate = 0.0
        self.input_key = None
        self.legacy_ucg_val = None


class FrozenCLIPEmbedder(AbstractEmbModel):
    """CLIP ViT-L stand-in: hidden states only (its pooled output is not used by SDXL)."""

    def __init__(self, width: int, vocab: int = 512):
        super().__init__()
        self.input_key = "txt"
        self.vocab = vocab
        self.transformer = nn.Module()
        self.transformer.text_model = nn.Module()
        self.transformer.text_model.embeddings = nn.Module()
        self.transformer.text_model.embeddings.token_embedding = nn.Embedding(vocab, width)
        self.transformer.text_model.embeddings.position_embedding = nn.Embedding(CHUNK_LENGTH, width)
        self.transformer.text_model.final_layer_norm = nn.LayerNorm(width)

    def forward(self, texts) -> torch.Tensor:
        text_model = self.transformer.text_model
        rows = []
        for text in texts:
            tokens = torch.tensor(tokenize(text, self.vocab), device=text_model.final_layer_norm.weight.device)
            hidden = text_model.embeddings.token_embedding(tokens) + text_model.embeddings.position_embedding.weight
            rows.append(text_model.final_layer_norm(hidden).reshape(-1, hidden.shape[-1]))
        return _stack_padded(rows)


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    """OpenCLIP ViT-bigG stand-in: hidden states and a pooled projection of the end-of-text token."""

    def __init__(self, width: int, vocab: int = 512):
        super().__init__()
        self.input_key = "txt"
        self.vocab = vocab
        self.model = nn.Module()
        self.model.token_embedding = nn.Embedding(vocab, width)
        self.model.positional_embedding = nn.Parameter(torch.randn(CHUNK_LENGTH, width) * 0.1)
        self.model.ln_final = nn.LayerNorm(width)
        self.model.text_projection = nn.Parameter(torch.randn(width, width) / math.sqrt(width))

    def forward(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        rows, pooled = [], []
        for text in texts:
            chunks = tokenize(text, self.vocab)
            tokens = torch.tensor(chunks, device=self.model.ln_final.weight.device)
            hidden = self.model.token_embedding(tokens) + self.model.positional_embedding
            rows.append(hidden.reshape(-1, hidden.shape[-1]))
            end_of_text = min(len([t for t in chunks[0] if t != self.vocab - 1]), CHUNK_LENGTH - 1)
            pooled.append(self.model.ln_final(hidden[0, end_of_text]) @ self.model.text_projection)
        return _stack_padded(rows), torch.stack(pooled)


class ConcatTimestepEmbedderND(AbstractEmbModel):
    def __init__(self, outdim: int, input_key: str):
        super().__init__()
        self.outdim = outdim
        self.input_key = input_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 1:
            x = x[:, None]
        b, dims = x.shape
        emb = timestep_embedding(x.reshape(-1), self.outdim)
        return emb.reshape(b, dims * self.outdim)


def _stack_padded(rows: list[torch.Tensor]) -> torch.Tensor:
    longest = max(row.shape[0] for row in rows)
    return torch.stack([torch.cat([row, row[-1:].repeat(longest - row.shape[0], 1)]) if row.shape[0] < longest else row for row in rows])


class GeneralConditioner(nn.Module):
    OUTPUT_DIM2KEYS: ClassVar[dict] = {2: "vector", 3: "crossattn"}
    KEY2CATDIM: ClassVar[dict] = {"vector": 1, "crossattn": 2}

    def __init__(self, embedders: list[AbstractEmbModel]):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch: dict, force_zero_embeddings: list | None = None) -> dict:
        output: dict[str, torch.Tensor] = {}
        force_zero_embeddings = force_zero_embeddings or []
        for embedder in self.embedders:
            emb_out = embedder(batch[embedder.input_key])
            if not isinstance(emb_out, (list, tuple)):
                emb_out = [emb_out]
            for emb in emb_out:
                out_key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                if out_key in output:
                    output[out_key] = torch.cat((output[out_key], emb), self.KEY2CATDIM[out_key])
                else:
                    output[out_key] = emb
        return output
