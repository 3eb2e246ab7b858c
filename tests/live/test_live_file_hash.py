"""WebUI 1.10.1: the refiner's hash in the infotext is the WebUI's own sha256 of the file, taken by
the read that loads the UNet (no "Calculating sha256" of the refiner), and kept in the WebUI's
hash cache, so that a restarted WebUI knows it without hashing (tests/live/hash_probe.py)."""

from __future__ import annotations

import json

import pytest

from tests.live.conftest import require_checkpoints
from tests.live.hash_probe import HASHING_LINE, listed_sha256, sha256_of, unhashed_copy
from tests.live.webui_api import REFINER, infotext, ours

pytestmark = pytest.mark.live


def test_the_refiners_hash_comes_from_its_load_and_the_webui_keeps_it_across_a_restart(hosts, console):
    api = hosts.api()
    require_checkpoints(api)
    with unhashed_copy(api, REFINER) as probe:
        full = sha256_of(probe)
        since = len(console())
        refined = api.txt2img(refiner=ours(probe.name, 25))
        assert f"SDXL Refiner: {probe.stem} [{full[:10]}]," in infotext(refined)
        assert json.loads(refined["info"])["extra_generation_params"]["SDXL Refiner"] == f"{probe.stem} [{full[:10]}]"
        assert f"{HASHING_LINE} {probe}" not in console()[since:]
        assert listed_sha256(api, probe) == full

        api.url = hosts.api(fresh=True).url  # the probe's clean-up follows the restarted WebUI
        assert listed_sha256(api, probe) == full, "read from the WebUI's cache at its start"
        again = api.txt2img(refiner=ours(probe.name, 25))
        assert f"SDXL Refiner: {probe.stem} [{full[:10]}]," in infotext(again)
        assert f"{HASHING_LINE} {probe}" not in console()
