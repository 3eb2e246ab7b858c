"""One validated, immutable settings object, whatever the source (UI, API, X/Y/Z, infotext)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HiresPass = Literal["default", "first", "second", "both"]

DEFAULT_STEPS_PERCENT = 20.0
DEFAULT_AESTHETIC_SCORE = 6.0
DEFAULT_NEGATIVE_AESTHETIC_SCORE = 2.5


@dataclass(frozen=True)
class Settings:
    """What the user asked for. Exactly one of the three step fields is set when enabled.

    ``steps_percent``: share of the steps the refiner runs (0-100).
    ``start_step``: number of base steps (the refiner starts at step ``start_step + 1``, 1-based).
    ``start_step_percentage``: share of steps done by the base before the refiner starts (0-100).
    ``hires_pass``: which hires-fix pass gets the refiner; "default" follows the WebUI setting.
    """

    enabled: bool = False
    checkpoint: str = ""
    steps_percent: float | None = DEFAULT_STEPS_PERCENT
    start_step: int | None = None
    start_step_percentage: float | None = None
    aesthetic_score: float = DEFAULT_AESTHETIC_SCORE
    negative_aesthetic_score: float = DEFAULT_NEGATIVE_AESTHETIC_SCORE
    hires_pass: HiresPass = "default"
