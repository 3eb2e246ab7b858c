"""Through a whole generation: a bad API arg fails the request; good ones end in infotext that pastes back."""

from __future__ import annotations

import gradio as gr
import pytest

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.settings import Settings, from_ui_args
from tests.standin.fixtures import webui  # noqa: F401 - the fixture
from tests.test_api import load_script

pytestmark = pytest.mark.filterwarnings("ignore:You have unused kwarg parameters")


@pytest.fixture
def sdxl(webui):  # noqa: F811
    base = webui.sgm.build_engine("base", seed=0)
    webui.write_checkpoint("base.safetensors", engine=base)
    webui.write_checkpoint("refiner.safetensors", engine=webui.sgm.build_engine("refiner", seed=1, text_encoder_of=base))
    webui.load("base.safetensors")
    return webui


def generate(webui, args: list, **fields):  # noqa: F811
    script = load_script(webui)()
    p = webui.txt2img(steps=5, **fields)
    webui.attach(p, script, args)
    return p, webui.run(p)


def test_an_invalid_api_arg_fails_the_generation_with_the_normalisers_message(sdxl) -> None:
    with pytest.raises(SettingsError) as caught:
        generate(sdxl, [{"checkpoint": "refiner.safetensors", "steps_percent": 20, "start_step": 2}])
    assert str(caught.value) == (
        "SDXL Refiner: give only one of 'steps_percent', 'start_step', 'start_step_percentage'; "
        "got steps_percent=20, start_step=2. Remove all but one."
    )


def test_a_refined_image_carries_infotext_that_pastes_back_to_the_same_settings(sdxl) -> None:
    from modules import infotext_utils

    from sdxl_refiner.host.paste import paste_fields
    from sdxl_refiner.host.ui import build_panel

    _, result = generate(sdxl, [{"checkpoint": "refiner.safetensors", "steps_percent": 40, "aesthetic_score": 7}])
    params = infotext_utils.parse_generation_parameters(result.infotexts[0])
    assert params["SDXL Refiner steps"] == "40%"
    assert params["SDXL Refiner split"] == "base 3 / refiner 2"

    with gr.Blocks():
        panel = build_panel(False)
    values = [field.function(params) for field in paste_fields(panel)]
    title = sdxl.checkpoint("refiner.safetensors").title
    assert from_ui_args(values) == Settings(enabled=True, checkpoint=title, steps_percent=40.0, aesthetic_score=7.0)


@pytest.mark.parametrize("args", [[False, "refiner.safetensors", 40], [True, "refiner.safetensors", 0]],
                         ids=["toggle off", "0 %"])
def test_off_or_zero_percent_writes_no_infotext(sdxl, args) -> None:
    p, _ = generate(sdxl, args)
    assert not [k for k in p.extra_generation_params if k.startswith("SDXL Refiner")]
