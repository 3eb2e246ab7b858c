"""generative-models' own ``UNetModel``: the class WebUI 1.10.1 builds SDXL UNets with.

The tests' UNet (``tests.support.sgm_unet``) is written from the released layout; these tests hold
it, and the config rule, against the real class. generative-models is not on PyPI, so its source
comes from a WebUI's ``repositories/generative-models`` (``SDXL_REFINER_GENERATIVE_MODELS``), else
from the WebUI 1.10.1 source archive in ``../shared/hosts/``, unpacked once into a cache outside
the clone. Only ``sgm/`` is needed: its package ``__init__`` (which imports the training stack)
is bypassed, and the modules are taken out of ``sys.modules`` again, so that the WebUI stand-in's
``sgm`` is not shadowed.
"""

from __future__ import annotations

import importlib
import os
import sys
import tarfile
import types
from pathlib import Path

from tests.support.host_sources import WEBUI_ARCHIVE as ARCHIVE

ARCHIVE_SGM = "webui-1.10.1/repositories/generative-models/sgm/"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdxl-refiner-tests" / "generative-models"
ENV = "SDXL_REFINER_GENERATIVE_MODELS"


class SgmUnavailable(RuntimeError):
    """Neither a generative-models checkout nor the WebUI source archive is here."""


def generative_models_root() -> Path:
    """A folder holding ``sgm/``: the one named by the environment, else the archive's, unpacked."""
    named = os.environ.get(ENV)
    if named:
        root = Path(named)
        if not (root / "sgm" / "modules" / "diffusionmodules" / "openaimodel.py").is_file():
            raise SgmUnavailable(f"{ENV}={named} holds no sgm/modules/diffusionmodules/openaimodel.py")
        return root
    marker = CACHE / ".complete"
    if marker.is_file():
        return CACHE
    if not ARCHIVE.is_file():
        raise SgmUnavailable(f"no generative-models: set {ENV}, or provide {ARCHIVE}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ARCHIVE) as archive:
        for member in archive.getmembers():
            if member.name.startswith(ARCHIVE_SGM) and (member.isfile() or member.isdir()):
                member.name = member.name[len(ARCHIVE_SGM) - len("sgm/"):]
                archive.extract(member, CACHE, filter="data")
    marker.touch()
    return CACHE


def unet_model_class() -> type:
    """``sgm.modules.diffusionmodules.openaimodel.UNetModel``, imported without sgm's ``__init__``."""
    root = generative_models_root()
    saved = {name: module for name, module in sys.modules.items() if name == "sgm" or name.startswith("sgm.")}
    for name in saved:
        del sys.modules[name]
    try:
        for package in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
            shell = types.ModuleType(package)
            shell.__path__ = [str(root.joinpath(*package.split(".")))]
            sys.modules[package] = shell
        return importlib.import_module("sgm.modules.diffusionmodules.openaimodel").UNetModel
    finally:
        for name in [name for name in sys.modules if name == "sgm" or name.startswith("sgm.")]:
            del sys.modules[name]
        sys.modules.update(saved)
