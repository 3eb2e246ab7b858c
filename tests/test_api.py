"""The HTTP API: alwayson_scripts args positionally (UI order) or as one dict; every invalid form refused."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import gradio as gr
import pytest

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.settings import UI_ARG_ORDER, Settings, from_ui_args
from tests.standin.fixtures import webui  # noqa: F401 - the fixture

SCRIPT_FILE = Path(__file__).resolve().parent.parent / "scripts" / "sdxl_refiner.py"
REFINER_FILE = "sd_xl_refiner_1.0.safetensors"

# outside the WebUI, gradio does not know the WebUI's tooltip= keyword
pytestmark = pytest.mark.filterwarnings("ignore:You have unused kwarg parameters")


def api_script_args(defaults: list, request_args: list) -> list:
    """The WebUI 1.10.1 API (init_script_args): the panel's default values, then the request's
    args over the first positions; args beyond the script's own are dropped."""
    args = list(defaults)
    for index in range(min(len(defaults), len(request_args))):
        args[index] = request_args[index]
    return args


@pytest.fixture
def panel_defaults(webui) -> list:  # noqa: F811
    from sdxl_refiner.host.ui import build_panel

    (webui.models_dir / REFINER_FILE).parent.mkdir(parents=True, exist_ok=True)
    (webui.models_dir / REFINER_FILE).write_bytes(b"refiner")
    webui.sd_models.list_models()
    with gr.Blocks():
        return [component.value for component in build_panel(False).inputs]


ACCEPTED = [
    ("positional, head only", [True, REFINER_FILE, 25],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=25.0)),
    ("positional, start step", [True, REFINER_FILE, 25, 6.0, 2.5, 10],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=None, start_step=10)),
    ("positional, every arg", [True, REFINER_FILE, 30, 7, 3, 0, "Both passes"],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=30.0, aesthetic_score=7.0,
              negative_aesthetic_score=3.0, hires_pass="both")),
    ("positional, extra args cut by the WebUI",
     [True, REFINER_FILE, 25, 6.0, 2.5, 0, "first", "grain", "", 0, 1, "none", "x", 1],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=25.0, hires_pass="first", prompt="grain")),
    ("positional, the refiner's prompts, CFG and noise",
     [True, REFINER_FILE, 25, 6.0, 2.5, 0, "Default (from settings)", "film grain", "blur", 4.5, 0.8],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=25.0, prompt="film grain",
              negative_prompt="blur", cfg_scale=4.5, noise_multiplier=0.8)),
    ("dict, the refiner's prompts, CFG and noise",
     [{"checkpoint": REFINER_FILE, "prompt": "film grain", "negative_prompt": "blur", "cfg_scale": 4,
       "noise_multiplier": 1.2}],
     Settings(enabled=True, checkpoint=REFINER_FILE, prompt="film grain", negative_prompt="blur", cfg_scale=4.0,
              noise_multiplier=1.2)),
    ("dict, blank prompts and the defaults mean the generation's own",
     [{"checkpoint": REFINER_FILE, "prompt": "  ", "negative_prompt": None, "cfg_scale": 0, "noise_multiplier": 1}],
     Settings(enabled=True, checkpoint=REFINER_FILE)),
    ("dict", [{"enabled": True, "checkpoint": REFINER_FILE, "steps_percent": 25}],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=25.0)),
    ("dict, start_step", [{"checkpoint": REFINER_FILE, "start_step": 24}],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=None, start_step=24)),
    ("dict, start_step_percentage", [{"checkpoint": REFINER_FILE, "start_step_percentage": 80}],
     Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=None, start_step_percentage=80.0)),
    ("dict, off", [{"enabled": False}], Settings()),
    ("no args: the panel's defaults", [], Settings()),
]

REFUSED = [
    ("positional, share as text", [True, REFINER_FILE, "abc"], "'steps_percent' must be a number from 0 to 100; got 'abc'"),
    ("positional, share out of range", [True, REFINER_FILE, 120], "'steps_percent' must be a number from 0 to 100; got 120"),
    ("positional, enabled as text", ["true", REFINER_FILE], "'enabled' must be true or false; got 'true'"),
    ("positional, no checkpoint", [True], "'checkpoint' is empty while the refiner is enabled"),
    ("dict, bool share", [{"checkpoint": REFINER_FILE, "steps_percent": True}], "got True (bool)"),
    ("dict, NaN", [{"checkpoint": REFINER_FILE, "steps_percent": math.nan}], "got nan (float)"),
    ("dict, inf score", [{"checkpoint": REFINER_FILE, "aesthetic_score": math.inf}], "'aesthetic_score'"),
    ("dict, negative start step", [{"checkpoint": REFINER_FILE, "start_step": -3}], "'start_step' must be a whole"),
    ("dict, fractional start step", [{"checkpoint": REFINER_FILE, "start_step": 3.5}], "got 3.5 (float)"),
    ("dict, two step fields", [{"checkpoint": REFINER_FILE, "start_step": 3, "start_step_percentage": 80}],
     "give only one of 'steps_percent', 'start_step', 'start_step_percentage'"),
    ("dict, unknown key", [{"checkpoint": REFINER_FILE, "switch_at": 0.8}], "unknown argument 'switch_at'"),
    ("dict, bad hires pass", [{"checkpoint": REFINER_FILE, "hires_pass": "last"}], "'hires_pass' must be one of"),
    ("dict, checkpoint as list", [{"checkpoint": [REFINER_FILE]}], "'checkpoint' must be a checkpoint name"),
    ("dict, no checkpoint", [{"steps_percent": 20}], "'checkpoint' is empty while the refiner is enabled"),
    ("dict, prompt as a list", [{"checkpoint": REFINER_FILE, "prompt": ["grain"]}], "'prompt' must be text"),
    ("dict, CFG out of range", [{"checkpoint": REFINER_FILE, "cfg_scale": 31}],
     "'cfg_scale' must be a number from 0 to 30; got 31"),
    ("dict, noise out of range", [{"checkpoint": REFINER_FILE, "noise_multiplier": -0.1}],
     "'noise_multiplier' must be a number from 0 to 1.5; got -0.1"),
    ("dict, hypernetwork in the refiner prompt", [{"checkpoint": REFINER_FILE, "prompt": "grain <hypernet:d:0.8>"}],
     "'prompt' holds '<hypernet:d:0.8>': the refiner takes LoRAs (<lora:...>), not the extra network type"),
    ("dict, LoRA weight as a word", [{"checkpoint": REFINER_FILE, "prompt": "<lora:detail:high>"}],
     "'prompt' holds '<lora:detail:high>': its text-encoder weight 'high' is not a number"),
    ("positional, base LoRAs as a number", [True, REFINER_FILE, 25, 6.0, 2.5, 0, "first", "", "", 0, 1, 1],
     "'base_loras' must be 'none' or 'same'; got 1 (int)"),
]


@pytest.mark.parametrize(("case", "request_args", "expected"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_api_args_give_these_settings(panel_defaults, case, request_args, expected) -> None:
    assert from_ui_args(api_script_args(panel_defaults, request_args)) == expected


@pytest.mark.parametrize(("case", "request_args", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_invalid_api_args_are_refused_with_a_message_naming_them(panel_defaults, case, request_args, fragment) -> None:
    with pytest.raises(SettingsError) as caught:
        from_ui_args(api_script_args(panel_defaults, request_args))
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("SDXL Refiner: ")


def load_script(webui):  # noqa: F811
    """Loads scripts/sdxl_refiner.py the way the WebUI loads a script file."""
    pytest.importorskip("sdxl_refiner.host.sampling")
    spec = importlib.util.spec_from_file_location(SCRIPT_FILE.name, SCRIPT_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, webui.scripts.Script)
               and v is not webui.scripts.Script]
    assert len(classes) == 1, "scripts/sdxl_refiner.py must hold exactly one Script"
    return classes[0]


def test_the_script_is_always_visible_under_its_stable_api_key(webui, panel_defaults) -> None:  # noqa: F811
    script = load_script(webui)()
    assert script.title().lower() == "sdxl refiner"
    assert script.show(False) is webui.scripts.AlwaysVisible
    assert script.show(True) is webui.scripts.AlwaysVisible
    for is_img2img in (False, True):
        with gr.Blocks():
            inputs = script.ui(is_img2img)
        assert [c.elem_id for c in inputs[1:]] == [
            f"sdxl_refiner_{'img2img' if is_img2img else 'txt2img'}_{name}" for name in UI_ARG_ORDER[1:]
        ]
        assert len(script.infotext_fields) == len(inputs)


def test_process_hands_a_settings_error_to_the_binding_instead_of_raising(webui, monkeypatch) -> None:  # noqa: F811
    script_class = load_script(webui)
    from sdxl_refiner.host import sampling

    handed: list = []
    monkeypatch.setattr(sampling, "prepare", lambda binding, p, settings: handed.append(settings))
    p = webui.txt2img()
    script_class().process(p, {"checkpoint": REFINER_FILE, "steps_percent": 25, "start_step": 3})
    script_class().process(p, True, REFINER_FILE, 25)
    assert isinstance(handed[0], SettingsError)
    assert handed[1] == Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=25.0)


def test_process_applies_xyz_values_from_the_processing_object(webui, monkeypatch) -> None:  # noqa: F811
    script_class = load_script(webui)
    from sdxl_refiner.host import sampling, xyz

    handed: list = []
    monkeypatch.setattr(sampling, "prepare", lambda binding, p, settings: handed.append(settings))
    p = webui.txt2img()
    setattr(p, xyz.XYZ_ATTR, {"enabled": True, "checkpoint": REFINER_FILE, "steps_percent": 0.0})
    script_class().process(p, False, "", 20, 6.0, 2.5, 0, "Default (from settings)")
    assert handed == [Settings(enabled=True, checkpoint=REFINER_FILE, steps_percent=0.0)]


def test_on_a_webui_without_the_sampling_hook_process_reports_instead_of_doing_nothing_silently(
    webui, monkeypatch, capsys  # noqa: F811
) -> None:
    script_class = load_script(webui)
    from sdxl_refiner.host import sampling

    handed: list = []
    monkeypatch.setattr(sampling, "prepare", lambda binding, p, settings: handed.append(settings))
    monkeypatch.delattr(webui.scripts.Script, "process_before_every_sampling")
    script_class().process(webui.txt2img(), True, REFINER_FILE, 25)
    assert handed == []
    assert "added in 1.10.0" in capsys.readouterr().out
