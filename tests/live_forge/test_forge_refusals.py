"""Forge 2 and Neo answer each bad input of ours as they answer their own: a 4xx status that fits
the cause, the message in ``detail`` and ``errors``, one console line and no traceback
(tests/live/refusals.py)."""

from __future__ import annotations

import pytest

from tests.live.refusals import Refusal, assert_refused, common_cases
from tests.live.webui_api import FORGE_BASE, FORGE_REFINER, ours

pytestmark = pytest.mark.live

CASES = [
    *common_cases(FORGE_REFINER),
    Refusal("refiner-as-base",
            {"override_settings": {"sd_model_checkpoint": FORGE_REFINER}, "refiner": ours(FORGE_REFINER, 25)},
            409, "CheckpointError", "is an SDXL refiner, which cannot compose an image"),
]
ON_BASE = {"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 8}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_refusal_has_its_status_its_message_and_no_traceback(forge_api, forge_console, case):
    assert_refused(forge_api, forge_console, case, ON_BASE, webui_body=False)
