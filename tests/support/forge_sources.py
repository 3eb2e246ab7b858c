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


def forge_module(relative: str) -> types.ModuleType:
    """``backend/sampling/condition.py`` (say) of the pinned Forge, imported on its own."""
    target = CACHE / relative
    if not target.is_file():
        if not FORGE_ARCHIVE.is_file():
            raise ForgeUnavailable(f"no Forge sources: {FORGE_ARCHIVE} is missing")
        with tarfile.open(FORGE_ARCHIVE) as archive:
            member = archive.getmember(FOLDER + relative)
            member.name = relative
            archive.extract(member, CACHE, filter="data")
    name = "forge_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
