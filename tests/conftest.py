"""Shared pytest setup: the repository root is importable, so tests import ``tests.support``."""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

from tests.standin.fixtures import webui  # noqa: E402, F401 - the stand-in WebUI fixture, for every test module
