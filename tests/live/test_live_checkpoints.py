"""Which checkpoints the real WebUI hands us (the refusals of those that cannot refine are in
test_live_refusals.py)."""

from __future__ import annotations

import pytest

from tests.live.webui_api import (
    REFINER,
    REFINER_FP16,
    REFINER_ROUNDED,
    REFINER_SPACED,
    infotext,
    ours,
    pixels,
)

pytestmark = pytest.mark.live


def test_a_checkpoint_with_spaces_in_a_subfolder_refines_as_the_same_bytes_elsewhere(api):
    spaced = api.txt2img(refiner=ours(REFINER_SPACED, 25))
    assert pixels(spaced) == pixels(api.txt2img(refiner=ours(REFINER, 25)))
    # named as the WebUI's own "Model" key names a checkpoint: its name without folder, and its hash
    assert "SDXL Refiner: tiny sdxl refiner [" in infotext(spaced)


def test_a_half_precision_refiner_under_no_half_computes_its_values_in_float32(api):
    half = api.txt2img(refiner=ours(REFINER_FP16, 25))
    assert pixels(half) == pixels(api.txt2img(refiner=ours(REFINER_ROUNDED, 25)))
    assert pixels(half) != pixels(api.txt2img())
