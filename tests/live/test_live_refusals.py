"""WebUI 1.10.1 answers each bad input of ours as it answers its own: a 4xx status that fits the
cause, the message in ``detail`` and ``errors``, one console line and no traceback
(tests/live/refusals.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.live.refusals import Refusal, assert_refused, common_cases
from tests.live.webui_api import BASE, REFINER, REFINER_WRONG_CONFIG, SCRIPT_KEY, SD1, ours

pytestmark = pytest.mark.live

CASES = [
    *common_cases(REFINER),
    Refusal("sd1-base", {"override_settings": {"sd_model_checkpoint": SD1}, "refiner": ours(REFINER, 25)}, 409,
            "CheckpointError", "is not SDXL"),
    Refusal("sd1-refiner", {"refiner": ours(SD1, 25)}, 422, "CheckpointError", "SD 1.x"),
    Refusal("wrong-config", {"refiner": ours(REFINER_WRONG_CONFIG, 25)}, 422, "CheckpointError",
            "model_channels is 48 in the config and 64 in the weights"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_refusal_has_its_status_its_message_and_no_traceback(api, console, case):
    assert_refused(api, console, case, {}, webui_body=True)


def test_webuiapi_raises_a_runtime_error_carrying_the_status_and_the_message(api):
    """The client most scripts use raises on any status but 200; a refusal must reach it as one."""
    import webuiapi

    address = urlsplit(api.url)
    client = webuiapi.WebUIApi(host=address.hostname, port=address.port)
    with pytest.raises(RuntimeError) as caught:
        client.txt2img(prompt="a red fox", steps=8, width=64, height=64, sampler_name="Euler",
                       override_settings={"sd_model_checkpoint": BASE},
                       alwayson_scripts={SCRIPT_KEY: {"args": [ours("tiny-sdxl-nowhere.safetensors", 25)]}})
    status, text = caught.value.args
    assert status == 404
    assert "'tiny-sdxl-nowhere.safetensors' is not in the WebUI's checkpoint list" in text
