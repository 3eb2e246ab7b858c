"""The refiner's sha256 for the infotext, without a read of the file of its own.

The WebUI family names a checkpoint by the sha256 of the whole file, and hashes it when it loads
it as a model. A refiner is never loaded as one, so asking the host for the hash before the first
step costs a whole read of the file there (seconds for the released 6 GB refiner), and the UNet's
load then reads it again. Instead, a hash the host already has (``modules.hashes``: its cache's
"hashes" section, keyed by ``checkpoint/<name>`` with the file's mtime) is used at once; otherwise
the background read that loads the refiner's UNet hashes every byte on the way and writes the
result into that cache, as the host writes its own, so that no host ever hashes the file again.
The image's infotext takes the name and hash when it is written, after sampling, as the WebUI's
own callable keys are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdxl_refiner.core.checkpoint import SAFETENSORS_SUFFIXES
from sdxl_refiner.core.file_digest import FileDigest


@dataclass(frozen=True)
class RefinerHash:
    """One generation's hash of its refiner: ``digest`` for the UNet's read to feed, or None where
    the host has the hash already, hashes nothing (``--no-hashing``), or the file is a pickle."""

    host_info: Any
    digest: FileDigest | None

    def short_title(self) -> str:
        """``name [hash]`` as the host's "Model" key has it; without a hash the name stands alone.

        Read from the host's cache, which the UNet's read has filled; the host hashes the file
        itself only where that read took no hash (the UNet was kept from an earlier generation
        while the host's cache lost the hash)."""
        self.host_info.calculate_shorthash()
        return self.host_info.short_title


def cache_key(host_info) -> str:
    return f"checkpoint/{host_info.name}"


def refiner_hash(host_info) -> RefinerHash:
    from modules import hashes, shared

    path = str(host_info.filename)
    if (
        getattr(shared.cmd_opts, "no_hashing", False)
        or not path.lower().endswith(SAFETENSORS_SUFFIXES)
        or hashes.sha256_from_cache(path, cache_key(host_info)) is not None
    ):
        return RefinerHash(host_info, None)
    # the mtime before the read: a file changed meanwhile is newer than its entry, and hashed again
    mtime = os.path.getmtime(path)
    return RefinerHash(host_info, FileDigest(os.path.getsize(path), recorder(cache_key(host_info), mtime)))


def recorder(key: str, mtime: float) -> Callable[[str], None]:
    """Writes a complete hash into the host's cache in one assignment (diskcache's own transaction)."""

    def record(sha256: str) -> None:
        from modules import hashes

        hashes.cache("hashes")[key] = {"mtime": mtime, "sha256": sha256}

    return record
