"""No silent failure in Forge: each step of our hooks, broken once, is loud (tests/live/faults.py)."""

from __future__ import annotations

import pytest

from tests.live import faults
from tests.live.webui_api import FORGE_BASE, FORGE_REFINER, ours

pytestmark = pytest.mark.live


@pytest.mark.parametrize("step", faults.STEPS)
def test_a_failure_in_each_step_of_our_hooks_is_loud(forge_api, forge_console, step):
    fields = {"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 8}
    faults.assert_failure_is_loud(forge_api, forge_console, step, fields, ours(FORGE_REFINER, 50))
