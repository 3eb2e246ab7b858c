"""Every sampler the running WebUI lists: a byte copy of the base as refiner gives the base-only
pixels, or the generation is refused with a message naming the sampler. Listed by the host, not
by us, so a sampler the WebUI adds is tested the day it appears."""

from __future__ import annotations

import pytest

from sdxl_refiner.core.samplers import REFUSED_SAMPLER_LABELS
from tests.live.webui_api import BASE_COPY, ApiError, WebUIApi, infotext, ours, pixels

pytestmark = pytest.mark.live
SHARES = (25, 50)


def listed_samplers(api: WebUIApi) -> list[str]:
    return [sampler["name"] for sampler in api.call("/sdapi/v1/samplers")]


def test_the_webui_lists_the_samplers_this_file_covers(api):
    names = listed_samplers(api)
    assert {"Euler", "DPM++ 2M", "Heun", "DPM adaptive", "LCM", *REFUSED_SAMPLER_LABELS} <= set(names)


def test_every_listed_sampler_gives_the_base_only_pixels_with_a_copy_of_the_base_or_is_refused(api):
    failures = []
    for sampler in listed_samplers(api):
        base_only = None if sampler in REFUSED_SAMPLER_LABELS else pixels(api.txt2img(sampler_name=sampler))
        for share in SHARES:
            try:
                refined = api.txt2img(sampler_name=sampler, refiner=ours(BASE_COPY, share))
            except ApiError as error:
                if sampler not in REFUSED_SAMPLER_LABELS or f"Sampler {sampler!r}" not in error.body:
                    failures.append(f"{sampler} at {share} %: refused ({error.body[:300]})")
                continue
            if sampler in REFUSED_SAMPLER_LABELS:
                failures.append(f"{sampler} at {share} %: ran, but the refiner cannot switch inside it")
            elif pixels(refined) != base_only:
                failures.append(f"{sampler} at {share} %: the pixels differ from the base-only image")
            elif "SDXL Refiner: " not in infotext(refined):
                failures.append(f"{sampler} at {share} %: the infotext does not say the refiner ran")
    assert not failures, "\n".join(failures)
