"""A failure anywhere in SDXL Refiner's hooks is loud in a live host: the live tests of every host
break each step once (``fault_extension``, linked into the host's extensions by ``host.py``) and
check what the user gets.

- A failure before the first step fails the request with our message, which names the step, as a
  500 whose traceback is in the console (a refusal of bad input is a 4xx without one).
- Where the sampler could not even be hooked, the image comes back unrefined, and its infotext says
  that the refiner did not run and why.
- A failure after the image was refined (postprocess) leaves the refined image as it is.
- In every case the next generation is the clean one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.live.refusals import assert_failure_keeps_its_traceback, new_text
from tests.live.webui_api import ApiError, WebUIApi, infotext, pixels

FAULT_SCRIPT_KEY = "sdxl refiner fault"
INJECTED = "RuntimeError: injected failure in {step}"
FAILS_THE_REQUEST = {
    "process": "SDXL Refiner failed while preparing the generation: " + INJECTED,
    "before_pass": "SDXL Refiner failed while preparing the sampling pass: " + INJECTED,
    "plan": "SDXL Refiner failed while planning the sampling pass: " + INJECTED,
}
NOTES_THE_IMAGE = {"hook": "the refiner did not run: hooking the sampler failed (" + INJECTED + ")"}
KEEPS_THE_REFINED_IMAGE = ("postprocess",)
STEPS = [*FAILS_THE_REQUEST, *NOTES_THE_IMAGE, *KEEPS_THE_REFINED_IMAGE]


def assert_failure_is_loud(api: WebUIApi, console: Callable[[], str], step: str, fields: dict, refiner: dict) -> None:
    base_only = api.txt2img(**fields)
    refined = api.txt2img(**fields, refiner=refiner)
    assert pixels(refined) != pixels(base_only), "the refiner must change this image for the check to mean anything"
    faulty = {**fields, "alwayson_scripts": {FAULT_SCRIPT_KEY: {"args": [step]}}}
    if step in FAILS_THE_REQUEST:
        since = len(console())
        with pytest.raises(ApiError) as raised:
            api.txt2img(**faulty, refiner=refiner)
        assert FAILS_THE_REQUEST[step].format(step=step) in raised.value.body, raised.value.body
        assert_failure_keeps_its_traceback(raised.value, new_text(console, since, "Traceback"))
    elif step in NOTES_THE_IMAGE:
        response = api.txt2img(**faulty, refiner=refiner)
        assert pixels(response) == pixels(base_only)
        assert NOTES_THE_IMAGE[step].format(step=step) in infotext(response), infotext(response)
    else:
        response = api.txt2img(**faulty, refiner=refiner)
        assert pixels(response) == pixels(refined)
        assert "SDXL Refiner split" in infotext(response)
    assert pixels(api.txt2img(**fields, refiner=refiner)) == pixels(refined), "the next generation is clean"
    assert pixels(api.txt2img(**fields)) == pixels(base_only)
