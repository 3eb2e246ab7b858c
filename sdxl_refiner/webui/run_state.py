"""Per-generation state, kept on the WebUI's processing object (never on the script or a global).

The WebUI runs API and UI requests through the same script objects, so everything that belongs
to one generation lives on ``p`` under one attribute and dies with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdxl_refiner.conditioning import RefinerCondSpec
from sdxl_refiner.errors import RefinerError
from sdxl_refiner.handoff import Handoff
from sdxl_refiner.residency import PendingRefiner, Placement
from sdxl_refiner.settings import Settings

RUN_ATTRIBUTE = "sdxl_refiner_run"


@dataclass
class ActivePass:
    """One sampling pass that is running with the refiner planned in."""

    handoff: Handoff
    empty_prompt: Any


@dataclass
class RefinerRun:
    """What ``prepare`` found out for one generation; ``error`` is raised from inside sampling."""

    settings: Settings | None = None
    error: RefinerError | None = None
    checkpoint_title: str = ""
    checkpoint_path: str = ""
    checkpoint_info: Any = None
    spec: RefinerCondSpec | None = None
    pending: PendingRefiner | None = None
    placement: Placement | None = None
    own_text: Any = None
    encoded: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    active: ActivePass | None = None
    passes_run: int = 0
    # Forge: the refiner's UnetPatcher, and the route its pass's conditioning modifier reads
    refiner_patcher: Any = None
    route: Any = None


def run_of(p: object) -> RefinerRun | None:
    return getattr(p, RUN_ATTRIBUTE, None)


def attach_run(p: object, run: RefinerRun | None) -> None:
    setattr(p, RUN_ATTRIBUTE, run)
