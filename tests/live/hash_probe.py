"""A refiner file no host has hashed yet, for the live tests of the one read that hashes it.

A hard link to a test refiner under a new name: the host's hash cache is keyed by the checkpoint's
name, so the link is unhashed, and it costs no disk (Forge's test refiner is 2 GB). The WebUI's
checkpoints need their ``.yaml`` beside them, which is copied.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.live.webui_api import WebUIApi

HASHING_LINE = "Calculating sha256 for"


def checkpoint_file(api: WebUIApi, name: str) -> Path:
    for model in api.call("/sdapi/v1/sd-models"):
        if Path(model["filename"]).name == name:
            return Path(model["filename"])
    raise LookupError(f"{name} is not in the host's checkpoint list")


@contextmanager
def unhashed_copy(api: WebUIApi, refiner: str) -> Iterator[Path]:
    source = checkpoint_file(api, refiner)
    probe = source.with_name(f"hash-probe-{os.getpid()}-{source.name}")
    os.link(source, probe)
    if source.with_suffix(".yaml").exists():
        shutil.copyfile(source.with_suffix(".yaml"), probe.with_suffix(".yaml"))
    try:
        api.call("/sdapi/v1/refresh-checkpoints", {})
        yield probe
    finally:
        probe.unlink()
        probe.with_suffix(".yaml").unlink(missing_ok=True)
        api.call("/sdapi/v1/refresh-checkpoints", {})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def listed_sha256(api: WebUIApi, path: Path) -> str | None:
    return next(model["sha256"] for model in api.call("/sdapi/v1/sd-models") if model["filename"] == str(path))
