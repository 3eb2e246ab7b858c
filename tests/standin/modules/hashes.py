"""Stand-in of ``modules.hashes`` (1.10.1): sha256 of whole files, remembered per title and mtime.

The cache is this module's dict (the WebUI keeps it in diskcache, ``cache("hashes")``); a fresh
stand-in has hashed nothing, as a WebUI that has never loaded or hashed a checkpoint.
"""

from __future__ import annotations

import hashlib
import os

from modules import shared

hashes_cache: dict[str, dict] = {}
calculated: list[str] = []
"""Stand-in only: the files whose sha256 was computed (not read from the cache), in order."""


def cache(subsection: str) -> dict:
    """``modules.cache.cache`` as ``modules.hashes`` re-exports it; only "hashes" is kept here."""
    if subsection != "hashes":
        raise KeyError(f"the stand-in keeps no {subsection!r} cache")
    return hashes_cache


def calculate_sha256(filename) -> str:
    digest = hashlib.sha256()
    with open(filename, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_from_cache(filename, title):
    try:
        ondisk_mtime = os.path.getmtime(filename)
    except FileNotFoundError:
        return None
    if title not in hashes_cache:
        return None
    cached_sha256 = hashes_cache[title].get("sha256", None)
    cached_mtime = hashes_cache[title].get("mtime", 0)
    if ondisk_mtime > cached_mtime or cached_sha256 is None:
        return None
    return cached_sha256


def sha256(filename, title):
    sha256_value = sha256_from_cache(filename, title)
    if sha256_value is not None:
        return sha256_value
    if shared.cmd_opts.no_hashing:
        return None
    sha256_value = calculate_sha256(filename)
    calculated.append(str(filename))
    hashes_cache[title] = {"mtime": os.path.getmtime(filename), "sha256": sha256_value}
    return sha256_value
