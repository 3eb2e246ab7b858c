"""The WebUI restarted with ``--medvram`` and with ``--lowvram``: its low-memory modes move the base
module by module, and the refiner must still run, give the images of the normal mode and leave
the copy of the base an identity."""

from __future__ import annotations

import pytest

from tests.live.conftest import require_checkpoints
from tests.live.webui_api import BASE_COPY, REFINER, infotext, ours, pixels

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def normal_mode(hosts) -> dict[str, list[bytes]]:
    """The images of the default flags, made in a freshly started WebUI as the others are."""
    api = hosts.api(fresh=True)
    require_checkpoints(api)
    return {"base": pixels(api.txt2img()), "refined": pixels(api.txt2img(refiner=ours(REFINER, 25))),
            "own": pixels(api.txt2img(refiner=ours(REFINER, 25, **OWN_VALUES)))}


# the refiner's own prompt is encoded mid-generation, while the low-memory hooks move the modules
OWN_VALUES = {"prompt": "film grain", "negative_prompt": "smudge", "cfg_scale": 3.5}


@pytest.mark.parametrize("flag", ["--medvram", "--lowvram"])
def test_a_low_memory_mode_refines_as_the_normal_mode_does(hosts, normal_mode, flag):
    api = hosts.api([flag])
    base_only = api.txt2img()
    assert pixels(base_only) == normal_mode["base"]
    assert pixels(api.txt2img(refiner=ours(BASE_COPY, 50))) == normal_mode["base"]
    refined = api.txt2img(refiner=ours(REFINER, 25))
    assert "SDXL Refiner split: base 6 / refiner 2" in infotext(refined)
    assert pixels(refined) == normal_mode["refined"]
    assert pixels(api.txt2img(refiner=ours(REFINER, 25, **OWN_VALUES))) == normal_mode["own"]
