"""Per-generation state, kept on the host's processing object (never on the script or a global).

The hosts run API and UI requests through the same script objects, so everything that belongs to
one generation lives on ``p`` under one attribute and dies with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdxl_refiner.core.conditioning import RefinerCondSpec
from sdxl_refiner.core.errors import RefinerError
from sdxl_refiner.core.handoff import Handoff
from sdxl_refiner.core.settings import Settings

RUN_ATTRIBUTE = "sdxl_refiner_run"


@dataclass
class ActivePass:
    """One sampling pass that is running with the refiner planned in; ``empty_prompt`` is the
    refiner-width empty prompt a binding pads conds with, where it pads them."""

    handoff: Handoff
    empty_prompt: Any = None


@dataclass
class RefinerRun:
    """What ``prepare`` found out for one generation; ``error`` is raised from inside sampling.

    ``refiner`` is the binding's own handle on the refiner for this generation (a load under way,
    a patcher): only the binding that set it reads it.
    """

    settings: Settings | None = None
    error: RefinerError | None = None
    file_hash: Any = None  # host.file_hash.RefinerHash: the refiner's name and hash for the infotext
    checkpoint_info: Any = None
    spec: RefinerCondSpec | None = None
    refiner: Any = None
    own_text: Any = None
    own_loras: tuple = ()  # core.loras.LoraTag of the refiner prompt, read once per generation
    loras: Any = None  # host.loras.RefinerLoras of the pass that runs
    encoded: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    active: ActivePass | None = None


def run_of(p: object) -> RefinerRun | None:
    return getattr(p, RUN_ATTRIBUTE, None)


def attach_run(p: object, run: RefinerRun | None) -> None:
    setattr(p, RUN_ATTRIBUTE, run)
