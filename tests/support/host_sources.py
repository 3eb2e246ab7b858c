"""Where the pinned host sources lie: the folder of WebUI source archives beside the checkout.

``../shared/hosts/`` holds the WebUI 1.10.1 and the Forge 2 (``dfdcbab``) source trees (each with
its pinned ``repositories/``) and Forge Neo's (``f95f632``) as archives, so that tests can have
generative-models, Forge's backend and a whole host without network access.
``SDXL_REFINER_HOST_SOURCES`` names another folder. Standard library only: the host script
imports it from any Python.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = Path(os.environ.get("SDXL_REFINER_HOST_SOURCES", REPO_ROOT.parent / "shared" / "hosts"))
WEBUI_ARCHIVE = SOURCES / "webui-1.10.1.tar.gz"
FORGE_ARCHIVE = SOURCES / "forge-dfdcbab.tar.gz"
NEO_ARCHIVE = SOURCES / "forge-neo-f95f632.tar.gz"
