"""Bad input over the API of a live host, answered as the host answers its own: a 4xx status that
fits the cause, the message in the body's ``detail``, one line in the console and no traceback.
The WebUI's and the Forge hosts' live tests run these cases against their own checkpoints
(README, "API": the statuses).

The body is the host's own: WebUI 1.10.1's handler writes ``error`` (the class), ``detail`` and
``errors``; Forge 2 and Neo answer an ``HTTPException`` with FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import pytest

from tests.live.webui_api import ApiError, WebUIApi, ours, pixels

REFUSAL_LINE = "SDXL Refiner: refused ("


@dataclass(frozen=True)
class Refusal:
    id: str
    fields: dict
    status: int
    error: str
    message: str


def common_cases(refiner: str) -> list[Refusal]:
    """The cases every host shares, with its own refiner checkpoint."""
    return [
        Refusal("unknown-name", {"refiner": ours("tiny-sdxl-nowhere.safetensors", 25)}, 404, "CheckpointError",
                "is not in the WebUI's checkpoint list. Give a title"),
        Refusal("path-like", {"refiner": ours("../../config.json", 25)}, 404, "CheckpointError",
                "is not in the WebUI's checkpoint list"),
        Refusal("empty-checkpoint", {"refiner": ours("", 25)}, 422, "SettingsError",
                "'checkpoint' is empty while the refiner is enabled"),
        Refusal("share-out-of-range", {"refiner": ours(refiner, 150)}, 422, "SettingsError",
                "'steps_percent' must be a number from 0 to 100"),
        Refusal("share-not-a-number", {"refiner": ours(refiner, "twenty")}, 422, "SettingsError",
                "'steps_percent' must be"),
        Refusal("two-step-settings", {"refiner": ours(refiner, 30, start_step=3)}, 422, "SettingsError",
                "give only one of 'steps_percent', 'start_step'"),
        Refusal("misspelt-name", {"refiner": {"enabled": True, "checkpoint": refiner, "step_percent": 20}}, 422,
                "SettingsError", "unknown argument 'step_percent'"),
        Refusal("enabled-yes", {"refiner": ours(refiner, 25, enabled="yes")}, 422, "SettingsError", "'enabled'"),
        Refusal("hypernet-tag", {"refiner": ours(refiner, 50, prompt="film grain <hypernet:detail:0.8>")}, 422,
                "SettingsError", "'prompt' holds '<hypernet:detail:0.8>': the refiner takes LoRAs"),
        Refusal("unknown-lora", {"refiner": ours(refiner, 50, prompt="film grain <lora:no-such-lora:0.8>")}, 404,
                "SettingsError", "names the LoRA 'no-such-lora', which is not in the host's LoRA list"),
        Refusal("unipc", {"refiner": ours(refiner, 25), "sampler_name": "UniPC"}, 422, "PlanError",
                "Sampler 'UniPC'"),
    ]


def new_text(read: Callable[[], str], since: int, wait_for: str, timeout: float = 5.0) -> str:
    """The console written after ``since`` characters, once ``wait_for`` is in it (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()[since:]
        if wait_for in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def assert_refused(api: WebUIApi, console: Callable[[], str], case: Refusal, base_fields: dict, *,
                   webui_body: bool) -> None:
    """The request is answered with the case's status and message, the console has the one line
    and no traceback, and the next plain generation is the one from before."""
    before = pixels(api.txt2img(**base_fields))
    checkpoint = api.call("/sdapi/v1/options")["sd_model_checkpoint"]
    since = len(console())
    fields = {**base_fields, **case.fields}
    if "override_settings" in case.fields:
        fields["override_settings_restore_afterwards"] = True
    with pytest.raises(ApiError) as caught:
        api.txt2img(**fields)
    assert caught.value.status == case.status, caught.value.body
    body = json.loads(caught.value.body)
    assert case.message in body["detail"], body
    if webui_body:
        assert body["error"] == case.error and body["errors"] == body["detail"], body
    else:
        assert set(body) == {"detail"}, body
    printed = new_text(console, since, REFUSAL_LINE)
    assert [line for line in printed.splitlines() if REFUSAL_LINE in line] == [
        f"SDXL Refiner: refused ({case.status} {status_phrase(case.status)}): {body['detail']}"], printed
    assert "Traceback" not in printed and "API error" not in printed, printed
    assert pixels(api.txt2img(**base_fields)) == before
    assert api.call("/sdapi/v1/options")["sd_model_checkpoint"] == checkpoint


def assert_failure_keeps_its_traceback(error: ApiError, console_text: str) -> None:
    """A failure that is not a refusal: a 5xx, and the host prints its traceback."""
    assert error.status == 500, error.body
    assert json.loads(error.body)["error"] == "RefinerFailed"
    assert "Traceback" in console_text and REFUSAL_LINE not in console_text


def status_phrase(status: int) -> str:
    return HTTPStatus(status).phrase
