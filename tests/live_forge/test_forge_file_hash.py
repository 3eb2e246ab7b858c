"""Forge 2 and Neo: the refiner's hash in the infotext is the host's own sha256 of the file, taken
by the read that loads the UNet, and kept in the host's hash cache across a restart
(tests/live/hash_probe.py)."""

from __future__ import annotations

import json

import pytest

from tests.live.hash_probe import HASHING_LINE, listed_sha256, sha256_of, unhashed_copy
from tests.live.webui_api import FORGE_BASE, FORGE_REFINER, infotext, ours

pytestmark = pytest.mark.live

ON_BASE = {"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 8}


def test_the_refiners_hash_comes_from_its_load_and_the_host_keeps_it_across_a_restart(
    forge_host, forge_api, forge_console
):
    if forge_host.install is None:
        pytest.skip("a restart needs a host these tests started (SDXL_REFINER_FORGE_HOST or SDXL_REFINER_NEO_HOST)")
    with unhashed_copy(forge_api, FORGE_REFINER) as probe:
        full = sha256_of(probe)
        since = len(forge_console())
        refined = forge_api.txt2img(**ON_BASE, refiner=ours(probe.name, 25))
        assert f"SDXL Refiner: {probe.stem} [{full[:10]}]," in infotext(refined)
        assert json.loads(refined["info"])["extra_generation_params"]["SDXL Refiner"] == f"{probe.stem} [{full[:10]}]"
        assert f"{HASHING_LINE} {probe}" not in forge_console()[since:]
        assert listed_sha256(forge_api, probe) == full

        forge_host.close()
        forge_api.url = forge_host.api().url  # the session's client follows the restarted host
        assert listed_sha256(forge_api, probe) == full, "read from the host's cache at its start"
        again = forge_api.txt2img(**ON_BASE, refiner=ours(probe.name, 25))
        assert f"SDXL Refiner: {probe.stem} [{full[:10]}]," in infotext(again)
        assert f"{HASHING_LINE} {probe}" not in forge_console()
