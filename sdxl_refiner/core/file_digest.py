"""The sha256 of a whole checkpoint file, taken by the read that loads its UNet.

The WebUI family names a checkpoint in the infotext by the sha256 of the whole file. Computed on
its own, that is one more read of a file of several GB, before the first step. Fed the bytes of
the one sequential read that also fills the UNet's tensors, it costs no read of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


class FileDigest:
    """Fed every byte of the file in order by the UNet's reader; complete only if it saw them all.

    ``on_complete`` gets the hex digest once, from the thread that read the file; a read that
    fails or stops early never calls it, so nothing half-hashed is kept anywhere."""

    def __init__(self, size: int, on_complete: Callable[[str], None] | None = None):
        self.size = size
        self.hashed = 0
        self.hexdigest: str | None = None
        self._sha256 = hashlib.sha256()
        self._on_complete = on_complete

    def update(self, data: bytes | memoryview) -> None:
        self._sha256.update(data)
        self.hashed += len(data)

    def finish(self) -> None:
        if self.hashed != self.size or self.hexdigest is not None:
            return
        self.hexdigest = self._sha256.hexdigest()
        if self._on_complete is not None:
            self._on_complete(self.hexdigest)
