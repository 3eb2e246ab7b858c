"""Shared pytest setup.

The repository root is importable, so tests import ``tests.support``. Torch runs on one thread:
the test models are tiny, so extra threads only cost (ten times over on a busy two-core
machine), and results do not depend on the machine's core count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

torch.set_num_threads(1)

from tests.standin.fixtures import webui  # noqa: E402, F401 - the stand-in WebUI fixture (tests/standin)

LIVE = Path(__file__).resolve().parent / "live"
LIVE_FORGE = LIVE.with_name("live_forge")


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """``--ignore=tests/live`` is the offline run's switch: the Forge live tests, beside it, are
    live tests too and stay out of that run with it."""
    if collection_path.resolve() != LIVE_FORGE:
        return None
    ignored = {Path(path).resolve() for path in config.getoption("ignore") or ()}
    return True if LIVE in ignored else None
