"""Whose text encoder the refiner's conds come from: the base's, sliced, or the refiner's own.

The released pair shares its OpenCLIP bigG encoder, so the base's conds are sliced; that is exact
only when the two files hold the same tensors, which is checked once per pair of files. Otherwise
the refiner's encoder has the architecture of the base's second one, so its weights are pointed
into that module for the length of one encoding and the host's own prompt machinery runs as
usual: emphasis, BREAK, textual inversion, prompt editing, AND. Each host says where its encoder
module is and how the file's tensors are named for it (an ``EncoderSlot``). The conds are cached
per prompt; the host's own cond cache is never touched, so a later base-only generation cannot
receive refiner-encoded conds.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from sdxl_refiner.core.checkpoint import BASE_BIGG_PREFIX, BASE_ENCODER_PREFIXES, REFINER_BIGG_PREFIX
from sdxl_refiner.core.conditioning import text_encoders_identical
from sdxl_refiner.core.errors import ConditioningError
from sdxl_refiner.core.residency import file_identity
from sdxl_refiner.host.checkpoints import ChosenRefiner
from sdxl_refiner.host.prompts import Encode, PromptJob

CACHED_PROMPTS = 16


class _TextEncoderTensors(Mapping):
    """A safetensors file's text-encoder tensors, keys relative to each prefix (tagged by its index),
    read one at a time when asked for: two encoders of a real pair are gigabytes."""

    def __init__(self, file, prefixes: tuple[str, ...]):
        self._file = file
        self._keys = {
            f"{index}:{key[len(prefix):]}": key
            for key in file.keys()  # noqa: SIM118 - safe_open is not iterable
            for index, prefix in enumerate(prefixes)
            if key.startswith(prefix)
        }

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(self._keys[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _encoders_identical(base_path: str, base_prefixes, refiner_path: str, refiner_prefixes) -> bool:
    if any(Path(path).suffix.lower() != ".safetensors" for path in (base_path, refiner_path)):
        return False
    with safe_open(base_path, framework="pt") as base_file, safe_open(refiner_path, framework="pt") as refiner_file:
        base = _TextEncoderTensors(base_file, base_prefixes)
        refiner = _TextEncoderTensors(refiner_file, refiner_prefixes)
        return len(base) > 0 and len(refiner) > 0 and text_encoders_identical(base, refiner)


def text_encoders_match(base_path: str, refiner_path: str, kind: str, checks: dict[tuple, bool]) -> bool:
    """Slicing the base's conds is exact only when the refiner's text encoder is the base's.

    A refiner-type file must hold the base's second encoder; a base-type one both encoders.
    Compared once per pair of files (as they are now on disk), then remembered.
    """
    key = (file_identity(base_path), file_identity(refiner_path), kind)
    if key not in checks:
        base_prefixes = (BASE_BIGG_PREFIX,) if kind == "refiner" else BASE_ENCODER_PREFIXES
        refiner_prefixes = (REFINER_BIGG_PREFIX,) if kind == "refiner" else BASE_ENCODER_PREFIXES
        checks[key] = _encoders_identical(base_path, base_prefixes, refiner_path, refiner_prefixes)
    return checks[key]


def text_encoder_refused(base_name: str, refiner_name: str, why: str) -> ConditioningError:
    return ConditioningError(
        f"SDXL Refiner checkpoint {refiner_name!r}: its text encoder is not the one of the base "
        f"{base_name!r}, and {why}. Use the refiner released with this base (the SDXL 1.0 base and refiner "
        "share their text encoder), or a refiner-type checkpoint in .safetensors whose OpenCLIP encoder has "
        "the base's architecture."
    )


def refiner_bigg_tensors(path: str, named_from: str) -> dict[str, torch.Tensor]:
    """The refiner file's OpenCLIP bigG tensors, named ``named_from`` + their names below the file's
    encoder prefix (the host's module names them from its own level)."""
    with safe_open(path, framework="pt") as file:
        return {
            named_from + key[len(REFINER_BIGG_PREFIX):]: file.get_tensor(key)
            for key in file.keys()  # noqa: SIM118 - safe_open is not iterable
            if key.startswith(REFINER_BIGG_PREFIX)
        }


def file_key(module_key: str) -> str:
    """Hosts wrap layers they hijack (``token_embedding`` becomes ``EmbeddingsWithFixes`` with a
    ``wrapped`` child): the checkpoint names the layer without that step."""
    return re.sub(r"(^|\.)wrapped\.", r"\1", module_key)


def filled_tensors(module: torch.nn.Module, not_loaded: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The module's tensors by their own names, without those no checkpoint fills (``not_loaded``,
    by the file's names)."""
    return {
        name: value for name, value in module.state_dict(keep_vars=True).items() if file_key(name) not in not_loaded
    }


def fits(module: torch.nn.Module | None, tensors: dict[str, torch.Tensor], not_loaded: tuple[str, ...] = ()) -> bool:
    if module is None or not tensors:
        return False
    own = {file_key(key): value for key, value in filled_tensors(module, not_loaded).items()}
    return own.keys() == tensors.keys() and all(own[k].shape == tensors[k].shape for k in own)


def placed_for(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
               not_loaded: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The refiner's tensors on each of the module's tensors' device and dtype, by the module's
    names; a tensor the module holds under two names (a wrapper's alias) is converted once."""
    converted: dict[str, torch.Tensor] = {}
    placed: dict[str, torch.Tensor] = {}
    for name, value in filled_tensors(module, not_loaded).items():
        key = file_key(name)
        if key not in converted:
            converted[key] = tensors[key].to(device=value.device, dtype=value.dtype)
        placed[name] = converted[key]
    return placed


@dataclass(frozen=True)
class EncoderSlot:
    """Where a host keeps the base's OpenCLIP encoder: how the refiner's weights are read for it,
    checked against it and pointed into it. The prompt machinery around it is the host's own."""

    read: Callable[[str], dict[str, torch.Tensor]]
    fits: Callable[[Any, dict[str, torch.Tensor]], bool]
    swapped_in: Callable[[Any, dict[str, torch.Tensor]], AbstractContextManager]


class OwnTextEncoder:
    """The refiner's encoder weights (read once per file) and the conds encoded with them."""

    def __init__(self, tensors: dict[str, torch.Tensor], slot: EncoderSlot):
        self.tensors = tensors
        self.slot = slot
        self.conds: OrderedDict[tuple, tuple] = OrderedDict()

    def encode(self, job: PromptJob, encode: Encode) -> tuple:
        """(cond, uncond) for one pass's prompts, as the host builds them, with the refiner's encoder in place."""
        from modules import shared

        key = (job, shared.sd_model.sd_checkpoint_info)
        if key in self.conds:
            self.conds.move_to_end(key)
            return self.conds[key]
        with self.slot.swapped_in(shared.sd_model, self.tensors):
            self.conds[key] = encode(shared.sd_model, job)
        while len(self.conds) > CACHED_PROMPTS:
            self.conds.popitem(last=False)
        return self.conds[key]


def own_text_encoder(sd_model, chosen: ChosenRefiner, slot: EncoderSlot, found: dict) -> OwnTextEncoder:
    """The refiner's own encoder, to encode the prompts with when it is not the base's; the last one
    read is kept in ``found`` (the process's resources) by file identity."""
    names = (sd_model.sd_checkpoint_info.name, chosen.host_info.name)
    refiner_path = chosen.path
    if not chosen.info.is_refiner_type or Path(refiner_path).suffix.lower() != ".safetensors":
        raise text_encoder_refused(*names, "only a refiner-type .safetensors checkpoint can bring its own encoder")
    identity = file_identity(refiner_path)
    if identity not in found:
        tensors = slot.read(refiner_path)
        if not slot.fits(sd_model, tensors):
            raise text_encoder_refused(
                *names, "its OpenCLIP encoder does not have the base's architecture to run in its place"
            )
        found.clear()
        found[identity] = OwnTextEncoder(tensors, slot)
    return found[identity]
