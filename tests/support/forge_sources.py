"""Single modules of Forge 2's ``backend``, from the pinned source archive, for the offline suite.

Forge's backend as a package needs Forge's whole environment (diffusers, transformers, its
argument parser); a few of its modules need only torch. Those are read from
``../shared/hosts/forge-dfdcbab.tar.gz`` (unpacked member by member into a cache outside the
clone) and imported by path, so the binding is tested against Forge's own classes, not a copy.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
import types
from pathlib import Path

from tests.support.host_sources import FORGE_ARCHIVE

FOLDER = "forge-dfdcbab/"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdxl-refiner-tests" / "forge-modules"


class ForgeUnavailable(RuntimeError):
    """The Forge source archive is not here."""


def _unpacked(relative: str, wanted) -> Path:
    """The members under ``relative`` that ``wanted(name)`` accepts, unpacked once into the cache."""
    target = CACHE / relative
    if not target.exists():
        if not FORGE_ARCHIVE.is_file():
            raise ForgeUnavailable(f"no Forge sources: {FORGE_ARCHIVE} is missing")
        with tarfile.open(FORGE_ARCHIVE) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix(FOLDER)
                if member.isfile() and wanted(name):
                    member.name = name
                    archive.extract(member, CACHE, filter="data")
    return target


def forge_package_root(package: str) -> Path:
    """The folder to put on ``sys.path`` for a pure-Python package Forge vendors in ``repositories/``
    (``huggingface_guess``, which needs only torch)."""
    relative = f"repositories/{package}/{package}"
    _unpacked(relative, lambda name: name.startswith(relative + "/") and name.endswith(".py"))
    return CACHE / "repositories" / package


def forge_module(relative: str) -> types.ModuleType:
    """``backend/sampling/condition.py`` (say) of the pinned Forge, imported on its own."""
    target = _unpacked(relative, lambda name: name == relative)
    name = "forge_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
