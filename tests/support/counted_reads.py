"""The refiner file's reader, counted: the bytes and calls of each read, and a read that fails
midway as a disk or an interrupt would stop it."""

from __future__ import annotations


class CountingFile:
    """The reader's file, counting the bytes and calls of each read; ``fail_after`` bytes raise."""

    def __init__(self, file, fail_after: int | None = None):
        self.file = file
        self.bytes_read = 0
        self.reads = 0
        self.fail_after = fail_after

    def readinto(self, target) -> int:
        if self.fail_after is not None and self.bytes_read >= self.fail_after:
            raise OSError("interrupted")
        got = self.file.readinto(target)
        self.bytes_read += got
        self.reads += 1
        return got

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
