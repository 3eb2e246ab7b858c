"""No silent failure in WebUI 1.10.1: each step of our hooks, broken once, is loud (tests/live/faults.py)."""

from __future__ import annotations

import pytest

from tests.live import faults
from tests.live.webui_api import REFINER, ours

pytestmark = pytest.mark.live


@pytest.mark.parametrize("step", faults.STEPS)
def test_a_failure_in_each_step_of_our_hooks_is_loud(api, console, step):
    faults.assert_failure_is_loud(api, console, step, {"steps": 8}, ours(REFINER, 50))
