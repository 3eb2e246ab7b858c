"""Refiner checkpoints: what a file is (from its header alone) and its UNet, read without the rest.

The WebUI's own refiner reloads whole checkpoints at the switch. Reading only
``model.diffusion_model.*`` (about three quarters of an SDXL refiner file) and deciding from the
header what a file is keeps the switch cheap and refuses unusable files before sampling starts.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import os
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open

from sdxl_refiner.core.errors import Cause, CheckpointError
from sdxl_refiner.core.file_digest import FileDigest
from sdxl_refiner.core.pinned import buffer_groups, flat_buffer
from sdxl_refiner.core.unet_config import (
    HostUNetConfig,
    UNetConfig,
    infer_unet_config,
    unet_constructor_params,
)

UNET_PREFIX = "model.diffusion_model."
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
# sgm embeds every scalar of the ADM vector (image sizes, crop, aesthetic score) in 256 channels.
SCALAR_EMBED_DIM = 256
# Largest header the format allows (safetensors refuses more than 100 MB too).
MAX_HEADER_BYTES = 100_000_000
# Bytes read at once when converting dtypes; bounds the extra memory of a converting load.
READ_CHUNK_BYTES = 64 * 2**20
# Builds the UNet class from its keyword arguments (sgm's ``network_config.params``).
Build = Callable[[dict], torch.nn.Module]

# SDXL's VAE latent; an inpainting UNet takes latent + mask + masked-image latent.
LATENT_CHANNELS = 4
INPAINT_IN_CHANNELS = 9

# The second text encoder (OpenCLIP ViT-bigG) is the refiner's embedder 0 and the base's embedder 1.
REFINER_BIGG_PREFIX = "conditioner.embedders.0.model."
BASE_BIGG_PREFIX = "conditioner.embedders.1.model."
BASE_ENCODER_PREFIXES = ("conditioner.embedders.0.", "conditioner.embedders.1.")
SDXL_REFINER_TEXT_KEY = REFINER_BIGG_PREFIX + "ln_final.weight"
SDXL_BASE_TEXT_KEY = BASE_BIGG_PREFIX + "ln_final.weight"
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class CheckpointKind(enum.Enum):
    SDXL_REFINER = "SDXL refiner"
    SDXL_BASE = "SDXL base-type"
    SDXL_INPAINT = "SDXL inpainting"
    SD1 = "SD 1.x"
    SD2 = "SD 2.x"
    OTHER = "other"


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's parsed header, kept with its classification so that loading the UNet
    and looking up keys never parse it again."""

    entries: Mapping[str, TensorEntry]
    data_start: int


@dataclass(frozen=True)
class CheckpointInfo:
    """``kind_from_text_encoder``: the kind was read from the text encoder's keys, as the WebUI reads
    it to choose the file's config; otherwise it was told from the UNet alone (a UNet-only file).
    ``header``: the parsed header of a safetensors file (``None`` for a pickle)."""

    path: Path
    kind: CheckpointKind
    reason: str | None
    unet_config: UNetConfig | None
    kind_from_text_encoder: bool = False
    header: SafetensorsHeader | None = field(default=None, compare=False, repr=False)

    @property
    def usable_as_refiner(self) -> bool:
        return self.reason is None and self.unet_config is not None

    @property
    def is_refiner_type(self) -> bool:
        return self.kind is CheckpointKind.SDXL_REFINER

    def keys(self) -> frozenset[str]:
        """The file's tensor names, from the header read when it was classified (none for a pickle)."""
        return frozenset(self.header.entries) if self.header is not None else frozenset()


# ---------------------------------------------------------------------------------------------
# Headers


def _resolve_existing(path: str | os.PathLike) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} does not exist or is not a file; "
            "choose a checkpoint from the list (refresh it if the file was just added).",
            Cause.NOT_FOUND,
        )
    return resolved


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """Parses the JSON header and checks it against the file's size, so that a truncated or
    corrupt file is refused with a clear message before any tensor is read."""
    return _read_header(_resolve_existing(path))[0]


def _read_header(path: Path) -> tuple[dict[str, TensorEntry], int]:
    """The tensors' entries (offsets relative to the data) and where the data begins in the file."""
    size = path.stat().st_size
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"Refiner checkpoint {str(path)!r} is {size} bytes long, too short to be a safetensors "
                    "file; the file is truncated or not a checkpoint: download it again."
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(
                    f"Refiner checkpoint {str(path)!r} has a corrupt safetensors header (it claims "
                    f"{header_len} header bytes in a file of {size}); the file is truncated or damaged: "
                    "download it again."
                )
            raw = file.read(header_len)
    except OSError as error:
        raise CheckpointError(f"Refiner checkpoint {str(path)!r} cannot be read: {error}.", Cause.INTERNAL) from error
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        entries = {
            key: TensorEntry(
                dtype=str(value["dtype"]),
                shape=tuple(int(n) for n in value["shape"]),
                start=int(value["data_offsets"][0]),
                end=int(value["data_offsets"][1]),
            )
            for key, value in header.items()
            if key != "__metadata__"
        }
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} has a corrupt safetensors header ({error}); "
            "the file is damaged or not a safetensors file: download it again."
        ) from error
    for key, entry in entries.items():
        element = _SAFETENSORS_DTYPES[entry.dtype].itemsize if entry.dtype in _SAFETENSORS_DTYPES else None
        if element is not None and entry.end - entry.start != math.prod(entry.shape) * element:
            raise CheckpointError(
                f"Refiner checkpoint {str(path)!r} has a corrupt safetensors header: tensor {key!r} of shape "
                f"{list(entry.shape)} ({entry.dtype}) spans {entry.end - entry.start} bytes; download it again."
            )
    data_bytes = size - 8 - header_len
    needed = max((entry.end for entry in entries.values()), default=0)
    if needed > data_bytes:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} is truncated: its header lists {needed} bytes of tensor "
            f"data but the file holds {data_bytes}; the download or copy did not finish: download it again."
        )
    return entries, 8 + header_len


def _load_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``.ckpt``/``.pt`` only through ``weights_only=True``: a pickle may carry code, never run it."""
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} was refused: its pickle asks for more than plain tensors "
            f"(code or foreign types), which is never run. Use a .safetensors version of it. ({error})"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} cannot be read as a torch checkpoint ({error}); the file is "
            "truncated or damaged: download it again, preferably as .safetensors."
        ) from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} holds a {type(loaded).__name__}, not a state dict; "
            "choose a Stable Diffusion checkpoint."
        )
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} has the suffix {path.suffix!r}; allowed are "
            f"{', '.join(CHECKPOINT_SUFFIXES)}. Choose a .safetensors checkpoint."
        )


class _CheckpointIndex:
    """A checkpoint read once for both classifying and loading it: a safetensors file's header
    (no tensor data), or a pickle's tensors from one weights-only load."""

    def __init__(self, path: Path, header: SafetensorsHeader | None = None):
        _check_suffix(path)
        self.path = path
        self.header = header
        self._pickled: dict[str, torch.Tensor] | None = None
        if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
            self._pickled = _load_pickled_state_dict(path)
        elif header is None:
            self.header = SafetensorsHeader(*_read_header(path))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._pickled is None:
            return {key: entry.shape for key, entry in self.header.entries.items()}
        return {key: tuple(value.shape) for key, value in self._pickled.items()}

    def take_unet_state_dict(
        self, dtype: torch.dtype | None, pin_memory: bool, digest: FileDigest | None = None
    ) -> dict[str, torch.Tensor]:
        """A pickle's tensors are handed over, not kept, so each is freed once converted. ``digest``
        is fed by a safetensors file's read; a pickle's is left incomplete."""
        pin_memory = pin_memory and torch.cuda.is_available()
        if self._pickled is None:
            return _read_safetensors_unet(
                self.path, self.header.entries, self.header.data_start, dtype, pin_memory, digest
            )
        pickled, self._pickled = self._pickled, None
        return _convert_pickled_unet(self.path, pickled, dtype, pin_memory)


def _index_of(checkpoint: str | os.PathLike | CheckpointInfo) -> _CheckpointIndex:
    """A classified checkpoint's kept header, or the file read anew."""
    if isinstance(checkpoint, CheckpointInfo):
        return _CheckpointIndex(_resolve_existing(checkpoint.path), checkpoint.header)
    return _CheckpointIndex(_resolve_existing(checkpoint))


# ---------------------------------------------------------------------------------------------
# Classification

_OLDER_FAMILIES = (
    (SD1_TEXT_PREFIX, CheckpointKind.SD1, "SD 1.x"),
    (SD2_TEXT_PREFIX, CheckpointKind.SD2, "SD 2.x"),
)
_NOT_SDXL_LATENT = (
    "works in another latent space and cannot refine an SDXL image; "
    "choose an SDXL refiner or an SDXL base-type checkpoint"
)


def _unet_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, Sequence[int]]:
    return {key[len(UNET_PREFIX) :]: shape for key, shape in shapes.items() if key.startswith(UNET_PREFIX)}


def _other_architecture(shapes: Mapping[str, Sequence[int]], unet: Mapping[str, Sequence[int]]) -> str | None:
    if any(key.startswith(("x_embedder.", "joint_blocks.")) for key in unet):
        return "an SD3 (MMDiT) checkpoint"
    if any(key.startswith(("double_blocks.", "single_blocks.")) for key in unet) or any(
        key.startswith(("double_blocks.", "single_blocks.")) for key in shapes
    ):
        return "a Flux checkpoint"
    if any(key.startswith(("down_blocks.", "unet.down_blocks.")) for key in shapes):
        return "a diffusers-format UNet (use the single-file .safetensors checkpoint)"
    if "input_blocks.0.0.weight" not in unet:
        return "not a Stable Diffusion checkpoint (no model.diffusion_model.input_blocks UNet)"
    return None


def _kind_from_unet(config: UNetConfig) -> CheckpointKind | None:
    """UNet-only files carry no text encoder: tell refiner from base by the ADM vector's make-up.

    A refiner's vector is the pooled text embedding (as wide as its context) plus five scalar
    embeddings; a base's is a pooled embedding narrower than its two-encoder context plus six.
    """
    if config.adm_in_channels is None:
        return None
    if config.adm_in_channels - 5 * SCALAR_EMBED_DIM == config.context_dim:
        return CheckpointKind.SDXL_REFINER
    pooled = config.adm_in_channels - 6 * SCALAR_EMBED_DIM
    if 0 < pooled < config.context_dim:
        return CheckpointKind.SDXL_BASE
    return None


def classify_shapes(path: Path, shapes: Mapping[str, Sequence[int]]) -> CheckpointInfo:
    """The classification rules, apart from file reading, so they can be tested on shape tables."""
    unet = _unet_shapes(shapes)
    other = _other_architecture(shapes, unet)
    if other:
        return CheckpointInfo(
            path, CheckpointKind.OTHER, f"{path.name} is {other}; it cannot refine SDXL", None
        )

    in_channels = unet["input_blocks.0.0.weight"][1]
    context = next((shape[1] for key, shape in unet.items() if key.endswith("attn2.to_k.weight")), None)
    for prefix, kind, family in _OLDER_FAMILIES:
        if any(key.startswith(prefix) for key in shapes):
            reason = f"{path.name} is an {family} checkpoint (context {context}); it {_NOT_SDXL_LATENT}"
            return CheckpointInfo(path, kind, reason, None)

    try:
        config = infer_unet_config(unet)
    except CheckpointError as error:
        return CheckpointInfo(path, CheckpointKind.OTHER, f"{path.name}: {error}", None)

    from_text_encoder = True
    if SDXL_BASE_TEXT_KEY in shapes:
        kind = CheckpointKind.SDXL_BASE
    elif SDXL_REFINER_TEXT_KEY in shapes:
        kind = CheckpointKind.SDXL_REFINER
    else:
        from_text_encoder = False
        kind = _kind_from_unet(config)
        if kind is None:
            if config.adm_in_channels is None and context in (768, 1024):
                sd_kind = CheckpointKind.SD1 if context == 768 else CheckpointKind.SD2
                reason = f"{path.name} is a UNet of an {sd_kind.value} model (context {context}); it {_NOT_SDXL_LATENT}"
                return CheckpointInfo(path, sd_kind, reason, None)
            return CheckpointInfo(
                path,
                CheckpointKind.OTHER,
                f"{path.name} has a UNet without text encoders whose conditioning widths (context "
                f"{config.context_dim}, vector {config.adm_in_channels}) match neither an SDXL refiner nor an "
                "SDXL base; choose an SDXL refiner or base-type checkpoint",
                None,
            )
    if in_channels == INPAINT_IN_CHANNELS:
        reason = (
            f"{path.name} is an SDXL inpainting checkpoint: its UNet takes {in_channels} input channels "
            f"(latent, mask and masked image), not the {LATENT_CHANNELS} of the latent being refined; "
            "choose an SDXL refiner or base-type checkpoint"
        )
        return CheckpointInfo(path, CheckpointKind.SDXL_INPAINT, reason, None)
    if in_channels != LATENT_CHANNELS or config.out_channels != LATENT_CHANNELS:
        reason = (
            f"{path.name} has an SDXL-type UNet with {in_channels} input and {config.out_channels} output "
            f"channels, not the {LATENT_CHANNELS} of an SDXL latent (an instruct or other variant); "
            "choose an SDXL refiner or base-type checkpoint"
        )
        return CheckpointInfo(path, CheckpointKind.OTHER, reason, None)
    return CheckpointInfo(path, kind, None, config, kind_from_text_encoder=from_text_encoder)


def classify_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """What a checkpoint is and whether it can refine SDXL, from the header alone (no tensor data)
    for safetensors; ``.ckpt``/``.pt`` are opened weights-only. Unreadable files raise."""
    return _classify(_resolve_existing(path))[0]


def _classify(path: Path) -> tuple[CheckpointInfo, _CheckpointIndex | None]:
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        reason = (
            f"{path.name} has the suffix {path.suffix!r}; allowed are "
            f"{', '.join(CHECKPOINT_SUFFIXES)}"
        )
        return CheckpointInfo(path, CheckpointKind.OTHER, reason, None), None
    index = _CheckpointIndex(path)
    return replace(classify_shapes(path, index.shapes()), header=index.header), index


# ---------------------------------------------------------------------------------------------
# Reading the UNet


def _contiguous_runs(entries: Mapping[str, TensorEntry]) -> list[list[tuple[str, TensorEntry]]]:
    """UNet tensors in file order, split where the dtype changes or other tensors lie between,
    so that each run is one sequential read into one buffer."""
    runs: list[list[tuple[str, TensorEntry]]] = []
    for key, entry in sorted(entries.items(), key=lambda item: item[1].start):
        last = runs[-1][-1][1] if runs else None
        if last is not None and last.end == entry.start and last.dtype == entry.dtype:
            runs[-1].append((key, entry))
        else:
            runs.append([(key, entry)])
    return runs


def _open_for_reading(path: Path):
    return path.open("rb", buffering=0)


def _read_exactly(file, target: memoryview, path: Path, digest: FileDigest | None) -> None:
    done = 0
    while done < len(target):
        got = file.readinto(target[done : done + READ_CHUNK_BYTES])
        if not got:
            raise CheckpointError(
                f"Refiner checkpoint {str(path)!r} ended while its UNet was being read; the file is truncated "
                "or was replaced meanwhile: download it again."
            )
        if digest is not None:
            digest.update(target[done : done + got])
        done += got


def _hash_through(file, end: int | None, digest: FileDigest) -> None:
    """Hashes from the file's position up to ``end`` (the end of the file for None): the bytes
    between the UNet's runs, which the read passes over in order instead of seeking past them."""
    left = None if end is None else end - file.tell()
    buffer = memoryview(bytearray(READ_CHUNK_BYTES if left is None else max(1, min(left, READ_CHUNK_BYTES))))
    while left is None or left > 0:
        got = file.readinto(buffer if left is None else buffer[: min(left, len(buffer))])
        if not got:
            return
        digest.update(buffer[:got])
        if left is not None:
            left -= got


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.view(torch.uint8).numpy()).cast("B")


def _read_run(
    file,
    path: Path,
    data_start: int,
    run: list[tuple[str, TensorEntry]],
    dtype: torch.dtype | None,
    pin_memory: bool,
    digest: FileDigest | None,
) -> dict[str, torch.Tensor]:
    source_dtype = _SAFETENSORS_DTYPES[run[0][1].dtype]
    target_dtype = dtype or source_dtype
    counts = [math.prod(entry.shape) for _, entry in run]
    tensors: dict[str, torch.Tensor] = {}
    for group in buffer_groups(counts, target_dtype, pin_memory):
        part = [run[index] for index in group]
        tensors.update(_read_part(file, path, data_start, part, source_dtype, target_dtype, pin_memory, digest))
    return tensors


def _read_part(
    file,
    path: Path,
    data_start: int,
    run: list[tuple[str, TensorEntry]],
    source_dtype: torch.dtype,
    target_dtype: torch.dtype,
    pin_memory: bool,
    digest: FileDigest | None,
) -> dict[str, torch.Tensor]:
    """Consecutive tensors of a run, read in one pass into one buffer."""
    elements = sum(math.prod(entry.shape) for _, entry in run)
    flat = flat_buffer(elements, target_dtype, pin_memory)
    file.seek(data_start + run[0][1].start)
    if target_dtype == source_dtype:
        _read_exactly(file, _as_bytes(flat), path, digest)
    else:
        chunk_elements = max(1, READ_CHUNK_BYTES // source_dtype.itemsize)
        staging = torch.empty(min(elements, chunk_elements), dtype=source_dtype)
        for first in range(0, elements, chunk_elements):
            count = min(chunk_elements, elements - first)
            _read_exactly(file, _as_bytes(staging[:count]), path, digest)
            flat[first : first + count].copy_(staging[:count])
    tensors = {}
    offset = 0
    for key, entry in run:
        count = math.prod(entry.shape)
        tensors[key[len(UNET_PREFIX) :]] = flat[offset : offset + count].view(entry.shape)
        offset += count
    return tensors


def _read_safetensors_unet(
    path: Path,
    header: Mapping[str, TensorEntry],
    data_start: int,
    dtype: torch.dtype | None,
    pin_memory: bool,
    digest: FileDigest | None = None,
) -> dict[str, torch.Tensor]:
    """With ``digest``, the read runs through the whole file in order, hashing every byte (the
    header, and the other tensors between the UNet's runs, are read and hashed too); without, it
    reads the UNet's runs alone."""
    entries = {key: entry for key, entry in header.items() if key.startswith(UNET_PREFIX)}
    if not entries:
        raise _no_unet_error(path)
    for key, entry in entries.items():
        if entry.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"Refiner checkpoint {str(path)!r}: UNet tensor {key!r} has dtype {entry.dtype}; "
                "UNet weights must be floating point. The file is damaged or not a checkpoint."
            )
    _validate_with_safetensors(path)
    state: dict[str, torch.Tensor] = {}
    try:
        with _open_for_reading(path) as file:
            for run in _contiguous_runs(entries):
                if digest is not None:
                    _hash_through(file, data_start + run[0][1].start, digest)
                state.update(_read_run(file, path, data_start, run, dtype, pin_memory, digest))
            if digest is not None:
                _hash_through(file, None, digest)
                digest.finish()
    except OSError as error:
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} could not be read ({error}); check the disk and the file's "
            "permissions, or download it again.",
            Cause.INTERNAL,
        ) from error
    return state


def _no_unet_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"Refiner checkpoint {str(path)!r} holds no UNet tensors ({UNET_PREFIX}*); "
        "choose an SDXL refiner or base-type checkpoint."
    )


def _validate_with_safetensors(path: Path) -> None:
    """The reference parser's checks (overlaps, gaps, sizes) on top of ours, before any data is read."""
    try:
        with safe_open(path, framework="pt", device="cpu"):
            pass
    except Exception as error:
        if type(error).__name__ != "SafetensorError" and not isinstance(error, (OSError, ValueError)):
            raise
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} is not a valid safetensors file ({error}); download it again."
        ) from error


def read_unet_state_dict(
    checkpoint: str | os.PathLike | CheckpointInfo,
    dtype: torch.dtype | None = None,
    *,
    pin_memory: bool = False,
    digest: FileDigest | None = None,
) -> dict[str, torch.Tensor]:
    """The UNet's tensors (keys without ``model.diffusion_model.``), converted tensor by tensor.

    From a safetensors file only the UNet's byte ranges are read, sequentially, straight into the
    returned tensors (through a small staging buffer when the dtype changes); they are views of one
    buffer per contiguous run of tensors. No dict of the whole file is built and no file mapping
    stays behind, so resident memory grows by the UNet's size and no more.
    ``pin_memory`` allocates page-locked host memory so later copies can overlap; it is ignored
    where CUDA is absent (there is nothing to overlap with). ``digest`` (a safetensors file only)
    makes the read run through the whole file and hash it on the way, still in one sequential pass.
    """
    return _index_of(checkpoint).take_unet_state_dict(dtype, pin_memory, digest)


def _convert_pickled_unet(
    path: Path, pickled: dict[str, torch.Tensor], dtype: torch.dtype | None, pin_memory: bool
) -> dict[str, torch.Tensor]:
    state = {key[len(UNET_PREFIX) :]: value for key, value in pickled.items() if key.startswith(UNET_PREFIX)}
    pickled.clear()
    if not state:
        raise _no_unet_error(path)
    converted = {}
    keys = list(state)
    for target_dtype, same_dtype in itertools.groupby(keys, key=lambda key: dtype or state[key].dtype):
        run = list(same_dtype)
        counts = [state[key].numel() for key in run]
        for group in buffer_groups(counts, target_dtype, pin_memory):
            flat = flat_buffer(sum(counts[index] for index in group), target_dtype, pin_memory)
            offset = 0
            for index in group:
                source = state.pop(run[index])
                target = flat[offset : offset + counts[index]].view(source.shape)
                converted[run[index]] = target.copy_(source)
                offset += counts[index]
    return converted


def _build_without_weights(build: Build, params: dict) -> torch.nn.Module:
    """On the meta device nothing is allocated and no weight initialiser draws from the global RNG
    (a draw would change the next img2img image). ``torch.random.fork_rng`` is not used: it
    restores the RNG on exit, which rewinds draws that another thread made meanwhile, and loads
    run in a background thread while the base samples."""
    with torch.device("meta"):
        return build(params)


def _check_layout(
    path: Path, module: torch.nn.Module, state: Mapping[str, torch.Tensor], host: HostUNetConfig | None
) -> None:
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} (file {tuple(state[key].shape)}, model {expected[key]})"
        for key in set(expected) & set(state)
        if tuple(state[key].shape) != expected[key]
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} UNet tensors missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected UNet tensors, e.g. {', '.join(unexpected[:3])}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches, e.g. {'; '.join(mismatched[:3])}")
    if problems:
        built_from = f"from {host.source}" if host is not None else "from its shapes"
        raise CheckpointError(
            f"Refiner checkpoint {str(path)!r} does not fit the UNet built for it ({built_from}): "
            f"{'; '.join(problems)}. The file is damaged or of an unsupported variant: choose another refiner "
            "checkpoint."
        )


def load_unet(
    checkpoint: str | os.PathLike | CheckpointInfo,
    build: Build,
    dtype: torch.dtype | None,
    device: str | torch.device = "cpu",
    *,
    pin_memory: bool = False,
    host_config: HostUNetConfig | None = None,
    digest: FileDigest | None = None,
) -> torch.nn.Module:
    """Builds the UNet from ``host_config`` (the config the host builds this file with; ``None``
    where it has none: the file's shapes decide) and fills it with the file's UNet weights.
    ``build`` takes the UNet class's keyword arguments. A ``CheckpointInfo`` from
    :func:`classify_checkpoint` is loaded without reading or classifying the file again.

    Everything happens on a local module: any error leaves nothing half-loaded behind.
    """
    if isinstance(checkpoint, CheckpointInfo):
        index = _index_of(checkpoint)
        info, resolved = checkpoint, index.path
    else:
        resolved = _resolve_existing(checkpoint)
        info, index = _classify(resolved)
    if not info.usable_as_refiner:
        raise CheckpointError(f"Refiner checkpoint {str(resolved)!r} cannot be used: {info.reason}.")
    params = unet_constructor_params(info.unet_config, host_config, str(resolved))
    module = _build_without_weights(build, params)
    state = index.take_unet_state_dict(dtype, pin_memory, digest)
    _check_layout(resolved, module, state, host_config)
    module.load_state_dict(state, strict=True, assign=True)
    left_on_meta = [
        name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta
    ]
    if left_on_meta:
        raise CheckpointError(
            f"Refiner checkpoint {str(resolved)!r}: the UNet class keeps tensors the file does not hold "
            f"({', '.join(left_on_meta[:3])}); it cannot be loaded from weights alone."
        )
    module.requires_grad_(False).eval()
    return module.to(device)
