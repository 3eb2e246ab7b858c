"""The Forge 2 or Forge Neo host itself, without SDXL Refiner: what every other Forge test and the benchmark stand on.

If these fail, the fault is in the host or its tiny checkpoints (``tests/live/host.py``,
``tests/live/make_forge_checkpoints.py``), not in the extension: the checkpoints are listed and
load whole, a base-only image is deterministic and not flat, and Forge's own built-in refiner runs
on this CPU and changes the image.
"""

from __future__ import annotations

import pytest

from tests.live.webui_api import (
    FORGE_BASE,
    FORGE_BASE_COPY,
    FORGE_BASE_FINETUNE,
    FORGE_REFINER,
    WebUIApi,
    pixels,
)

pytestmark = pytest.mark.live

LOAD_PROBLEMS = ("Missing:", "Unexpected:", "Failed to recognize model type")


def base_only(**fields: object) -> dict:
    """A small request on the Forge base (the client's default checkpoint is the WebUI's)."""
    return {"override_settings": {"sd_model_checkpoint": FORGE_BASE}, "width": 64, "height": 64, "steps": 6,
            **fields}


def title_of(api: WebUIApi, name: str) -> str:
    """Forge's title for a file, as its checkpoint dropdown and refiner_checkpoint take it."""
    return next(model["title"] for model in api.call("/sdapi/v1/sd-models") if model["filename"].endswith(name))


def distinct_values(image: bytes) -> int:
    return len(set(image))


def test_the_checkpoints_are_listed(forge_api: WebUIApi):
    filenames = [model["filename"] for model in forge_api.call("/sdapi/v1/sd-models")]
    for name in (FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER, FORGE_BASE_FINETUNE):
        assert any(filename.endswith("/" + name) for filename in filenames), (name, filenames)


def test_a_base_only_image_is_not_flat_and_the_same_request_gives_the_same_image(forge_api: WebUIApi):
    first = forge_api.txt2img(**base_only())
    second = forge_api.txt2img(**base_only())
    image = pixels(first)[0]
    assert len(image) == 64 * 64 * 3
    assert distinct_values(image) > 32, "the image is (nearly) flat: the tiny weights give no structure"
    assert pixels(second) == pixels(first)
    assert pixels(forge_api.txt2img(**base_only(seed=99))) != pixels(first), "the seed does not reach the image"


def test_the_host_loaded_every_tensor_of_the_checkpoints(forge_api: WebUIApi, forge_console, family):
    before = len(forge_console())
    forge_api.txt2img(**base_only(override_settings={"sd_model_checkpoint": FORGE_REFINER}))
    forge_api.txt2img(**base_only())
    console = forge_console()[before:]
    loads = [line for line in console.splitlines() if line.startswith(("StateDict Keys", *LOAD_PROBLEMS))]
    assert not [line for line in loads if line.startswith(LOAD_PROBLEMS)], loads
    if family.kind.name == "Forge 2":  # Neo prints its loaded keys at debug level only
        assert any("'text_encoder_2'" in line for line in loads), loads  # the base, with both encoders
        assert any("'text_encoder'" in line and "'text_encoder_2'" not in line for line in loads), loads  # the refiner
    else:
        assert console.count("Model loaded in") == 2, console[-3000:]


def test_the_hosts_built_in_refiner_runs_and_changes_the_image(forge_api: WebUIApi, family):
    alone = forge_api.txt2img(**base_only())
    with forge_api.options(**family.builtin_options):
        refined = forge_api.txt2img(**base_only(refiner_checkpoint=title_of(forge_api, family.builtin_refiner),
                                                refiner_switch_at=0.5))
    image = pixels(refined)[0]
    assert distinct_values(image) > 32, "the refined image is (nearly) flat"
    assert image != pixels(alone)[0]
    assert pixels(forge_api.txt2img(**base_only())) == pixels(alone), "the built-in refiner left the base changed"
