"""Which checkpoints the real WebUI hands us, and the refusals of those that cannot refine.

Every refusal is an HTTP error whose body names the cause, and the next plain generation is the
one from before it: the base is back in place.
"""

from __future__ import annotations

import pytest

from tests.live.webui_api import (
    BASE,
    REFINER,
    REFINER_FP16,
    REFINER_ROUNDED,
    REFINER_SPACED,
    SD1,
    ApiError,
    infotext,
    ours,
    pixels,
)

pytestmark = pytest.mark.live


@pytest.mark.parametrize(("fields", "cause"), [
    pytest.param({"override_settings": {"sd_model_checkpoint": SD1}}, "is not SDXL", id="sd1-base"),
    pytest.param({"refiner": ours(SD1, 25)}, "SD 1.x", id="sd1-refiner"),
    pytest.param({"refiner": ours("tiny-sdxl-nowhere.safetensors", 25)}, "not in the WebUI's checkpoint list",
                 id="unknown-name"),
    pytest.param({"refiner": ours("../../config.json", 25)}, "not in the WebUI's checkpoint list", id="path-like"),
    pytest.param({"refiner": ours(REFINER, 150)}, "'steps_percent' must be", id="share-out-of-range"),
    pytest.param({"refiner": ours(REFINER, "twenty")}, "'steps_percent' must be", id="share-not-a-number"),
    pytest.param({"refiner": {"enabled": True, "checkpoint": REFINER, "step_percent": 20}}, "step_percent",
                 id="misspelt-name"),
])
def test_a_refusal_is_an_http_error_naming_the_cause_and_the_base_is_left_as_it_was(api, fields, cause):
    before = pixels(api.txt2img())
    fields = {"refiner": ours(REFINER, 25), **fields}
    if "override_settings" in fields:
        fields["override_settings_restore_afterwards"] = True
    with pytest.raises(ApiError) as caught:
        api.txt2img(**fields)
    assert cause in caught.value.body
    assert "SDXL Refiner" in caught.value.body
    assert pixels(api.txt2img()) == before
    assert BASE in api.call("/sdapi/v1/options")["sd_model_checkpoint"]


def test_a_checkpoint_with_spaces_in_a_subfolder_refines_as_the_same_bytes_elsewhere(api):
    spaced = api.txt2img(refiner=ours(REFINER_SPACED, 25))
    assert pixels(spaced) == pixels(api.txt2img(refiner=ours(REFINER, 25)))
    # named as the WebUI's own "Model" key names a checkpoint: its name without folder, and its hash
    assert "SDXL Refiner: tiny sdxl refiner [" in infotext(spaced)


def test_a_half_precision_refiner_under_no_half_computes_its_values_in_float32(api):
    half = api.txt2img(refiner=ours(REFINER_FP16, 25))
    assert pixels(half) == pixels(api.txt2img(refiner=ours(REFINER_ROUNDED, 25)))
    assert pixels(half) != pixels(api.txt2img())
