"""The panel: component tree, order, defaults, ids and tooltips; paste restores it; settings section."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdxl_refiner.core.infotext import infotext_params
from sdxl_refiner.core.settings import HIRES_PASS_LABELS, UI_ARG_ORDER, Settings, from_named, from_ui_args
from tests.standin.fixtures import webui  # noqa: F401 - the fixture

REFINER_FILE = "sd_xl_refiner_1.0.safetensors"


@pytest.fixture(autouse=True)
def tooltips(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebUI takes ``tooltip=`` off every gradio input and keeps it as ``webui_tooltip``."""
    original = gr.components.IOComponent.__init__

    def init(self, *args, tooltip=None, **kwargs):
        self.webui_tooltip = tooltip
        original(self, *args, **kwargs)

    monkeypatch.setattr(gr.components.IOComponent, "__init__", init)


@pytest.fixture
def checkpoints(webui):  # noqa: F811
    for name in (REFINER_FILE, "sd_xl_base_1.0.safetensors", "sub/juggernaut, v9.safetensors"):
        path = webui.models_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    webui.sd_models.list_models()
    return webui


def build(webui, is_img2img: bool):  # noqa: F811
    from sdxl_refiner.host.ui import build_panel

    with gr.Blocks():
        return build_panel(is_img2img)


@pytest.mark.parametrize("is_img2img", [False, True], ids=["txt2img", "img2img"])
def test_panel_inputs_follow_the_ui_arg_order_with_their_defaults(checkpoints, is_img2img) -> None:
    from modules.ui_components import InputAccordion

    panel = build(checkpoints, is_img2img)
    tab = "img2img" if is_img2img else "txt2img"
    assert panel.inputs == [getattr(panel, name) for name in UI_ARG_ORDER]
    assert isinstance(panel.enabled, InputAccordion)
    assert panel.enabled.label == "SDXL Refiner"
    assert panel.enabled.accordion_id == f"sdxl_refiner_{tab}"
    assert [type(c).__name__ for c in panel.inputs[1:]] == [
        "Dropdown", "Slider", "Slider", "Slider", "Slider", "Dropdown", "Textbox", "Textbox", "Slider", "Slider",
        "Radio",
    ]
    assert [c.value for c in panel.inputs] == [
        False, "", 20, 6.0, 2.5, 0, "Default (from settings)", "", "", 0, 1, "Not on the refiner",
    ]
    # gradio keeps a radio's choices as (label, value) pairs
    assert [choice[-1] for choice in panel.base_loras.choices] == ["Not on the refiner", "Also on the refiner"]
    assert (panel.cfg_scale.minimum, panel.cfg_scale.maximum) == (0, 30)
    assert (panel.noise_multiplier.minimum, panel.noise_multiplier.maximum) == (0, 1.5)
    assert (panel.steps_percent.minimum, panel.steps_percent.maximum) == (0, 100)
    assert panel.hires_pass.choices == list(HIRES_PASS_LABELS.values())
    assert panel.hires_pass.visible is not is_img2img
    for component in [*panel.inputs[1:], panel.split_line]:
        assert component.elem_id.startswith(f"sdxl_refiner_{tab}_"), component.elem_id
    for component in panel.inputs[1:]:
        assert component.webui_tooltip, component.elem_id


def test_the_panels_defaults_mean_off(checkpoints) -> None:
    panel = build(checkpoints, False)
    assert from_ui_args([c.value for c in panel.inputs]) == Settings()


def test_checkpoint_choices_are_the_webuis_checkpoint_list(checkpoints) -> None:
    panel = build(checkpoints, False)
    titles = checkpoints.sd_models.checkpoint_tiles()
    assert len(titles) == 3
    assert panel.checkpoint.choices == titles


@pytest.mark.parametrize("version", ["4.40.0", "4.0.1", "5.9.1"])
def test_gradio_4_lists_an_entry_for_no_refiner_first_so_the_field_shows_what_is_sent(
    checkpoints, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    from sdxl_refiner.host.ui import checkpoint_choices

    monkeypatch.setattr(gr, "__version__", version)
    choices = checkpoint_choices()["choices"]
    assert choices[0] == ("None", "")
    assert choices[1:] == checkpoints.sd_models.checkpoint_tiles()


@pytest.mark.parametrize("version", ["3.41.2", "3.50.2"])
def test_gradio_3_lists_only_the_titles(checkpoints, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    from sdxl_refiner.host.ui import checkpoint_choices

    monkeypatch.setattr(gr, "__version__", version)
    assert checkpoint_choices()["choices"] == checkpoints.sd_models.checkpoint_tiles()


def test_aesthetic_defaults_come_from_the_webuis_options(checkpoints) -> None:
    checkpoints.shared.opts.sdxl_refiner_high_aesthetic_score = 7.5
    checkpoints.shared.opts.sdxl_refiner_low_aesthetic_score = 12.0
    panel = build(checkpoints, False)
    assert (panel.aesthetic_score.value, panel.negative_aesthetic_score.value) == (7.5, 10.0)


def write_and_parse(webui, written: dict[str, str]) -> dict[str, str]:  # noqa: F811
    from modules import infotext_utils

    line = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in {"Steps": "30", **written}.items())
    return infotext_utils.parse_generation_parameters(f"a fox\nNegative prompt: blur\n{line}")


def pasted(webui, panel, params: dict) -> list[object]:  # noqa: F811
    from sdxl_refiner.host.paste import paste_fields

    fields = paste_fields(panel)
    assert [field.component for field in fields] == panel.inputs
    return [field.function(params) for field in fields]


# prompts that the infotext must quote (commas, colons, newlines, quotes) or leave bare
PROMPTS = ["", "film grain", "skin pores, film grain", "a: b", "line one\nline two", 'say "cheese", twice',
           "(detail:1.2) AND grain :0.5", "[coarse:fine:0.5]"]

ui_settings = st.builds(
    lambda on_share, share, start, score, negative, hires, prompt, negative_prompt, cfg, noise: from_named({
        "checkpoint": REFINER_FILE,
        **({"steps_percent": share} if on_share else {"start_step": start}),
        "aesthetic_score": score,
        "negative_aesthetic_score": negative,
        "hires_pass": hires,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "cfg_scale": cfg,
        "noise_multiplier": noise,
    }),
    st.booleans(),
    st.integers(min_value=1, max_value=100).map(float),
    st.integers(min_value=1, max_value=150),
    st.sampled_from([6.0, 6.5, 9.0, 0.0]),
    st.sampled_from([2.5, 1.0, 3.3]),
    st.sampled_from(list(HIRES_PASS_LABELS)),
    st.sampled_from(PROMPTS),
    st.sampled_from(PROMPTS),
    st.sampled_from([0.0, 1.0, 4.5, 7.0, 30.0]),
    st.sampled_from([1.0, 0.0, 0.85, 1.5]),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(ui_settings)
def test_pasting_our_infotext_restores_every_field(checkpoints, wanted: Settings) -> None:
    panel = build(checkpoints, False)
    info = checkpoints.checkpoint(REFINER_FILE)
    params = write_and_parse(checkpoints, infotext_params(wanted, checkpoint_title=info.short_title, plan=None))
    values = pasted(checkpoints, panel, params)
    assert values[1] == info.title
    assert from_ui_args(values) == dataclasses.replace(wanted, checkpoint=info.title)


def test_pasting_without_our_keys_turns_the_toggle_off_and_leaves_the_rest(checkpoints) -> None:
    panel = build(checkpoints, False)
    params = write_and_parse(checkpoints, {"Refiner": REFINER_FILE, "Refiner switch at": "0.8"})
    assert pasted(checkpoints, panel, params) == [False] + [None] * (len(panel.inputs) - 1)


def test_a_pasted_checkpoint_missing_here_empties_the_dropdown(checkpoints) -> None:
    panel = build(checkpoints, False)
    values = pasted(checkpoints, panel, {"SDXL Refiner": "elsewhere [0123456789]", "SDXL Refiner steps": "25%"})
    assert values[:3] == [True, "", 25.0]


def test_a_pasted_checkpoint_is_the_entry_as_the_dropdown_lists_it(checkpoints, monkeypatch) -> None:
    """Forge 2 and Neo list checkpoints by file name, not title; a gradio 4 dropdown shows a value
    it does not list as an empty field."""
    sd_models = checkpoints.sd_models
    monkeypatch.setattr(sd_models, "checkpoint_tiles",
                        lambda: [f"listed {info.name}" for info in sd_models.checkpoints_list.values()])
    panel = build(checkpoints, False)
    info = checkpoints.checkpoint(REFINER_FILE)
    values = pasted(checkpoints, panel, {"SDXL Refiner": info.short_title, "SDXL Refiner steps": "25%"})
    assert values[:3] == [True, f"listed {info.name}", 25.0]


def test_builtin_refiner_infotext_fills_the_panel_only_when_opted_in(checkpoints) -> None:
    panel = build(checkpoints, False)
    params = write_and_parse(checkpoints, {"Refiner": REFINER_FILE, "Refiner switch at": "0.75"})
    assert pasted(checkpoints, panel, params)[0] is False
    from sdxl_refiner.host import options

    options.add_options()
    checkpoints.shared.opts.sdxl_refiner_import_builtin_infotext = True
    values = pasted(checkpoints, panel, params)
    assert values[:3] == [True, checkpoints.checkpoint(REFINER_FILE).title, 25.0]
    assert values[5] == 0


def test_a_builtin_refiner_that_switched_at_a_sigma_fills_the_checkpoint_and_leaves_the_share(checkpoints) -> None:
    """Forge Neo's built-in refiner writes a sigma as "Refiner switch at" unless refiner_use_steps is on."""
    panel = build(checkpoints, False)
    params = write_and_parse(checkpoints, {"Refiner": REFINER_FILE, "Refiner switch at": "0.75"})
    from sdxl_refiner.host import options

    options.add_options()
    opts = checkpoints.shared.opts
    opts.sdxl_refiner_import_builtin_infotext = True
    opts.add_option("refiner_use_steps", checkpoints.shared.OptionInfo(False, "Refiner switches by steps"))
    values = pasted(checkpoints, panel, params)
    assert values[:3] == [True, checkpoints.checkpoint(REFINER_FILE).title, None]
    opts.refiner_use_steps = True
    assert pasted(checkpoints, panel, params)[:3] == [True, checkpoints.checkpoint(REFINER_FILE).title, 25.0]


def test_settings_section_options_and_flags(webui) -> None:  # noqa: F811
    from sdxl_refiner.host import options

    webui.script_callbacks.clear_callbacks()
    options.register_callbacks(lambda: [])
    options.register_callbacks(lambda: [])
    assert len(webui.script_callbacks.callback_map["callbacks_ui_settings"]) == 1
    webui.script_callbacks.ui_settings_callback()
    labels = webui.shared.opts.data_labels
    for key in (options.OPTION_RESIDENCY, options.OPTION_CACHE_SIZE, options.OPTION_HIRES_PASS,
                options.OPTION_IMPORT_BUILTIN):
        assert labels[key].section == options.SECTION
    assert "sdxlRefinerUnload" in labels[options.OPTION_CACHE_SIZE].comment_before
    assert (options.residency_policy(), options.cache_capacity()) == ("auto", 1)
    webui.shared.opts.sdxl_refiner_residency = "offload"
    webui.shared.opts.sdxl_refiner_cache_size = 2
    assert (options.residency_policy(), options.cache_capacity()) == ("offload", 2)
    webui.shared.cmd_opts.sdxl_refiner_residency = "lowvram"
    webui.shared.cmd_opts.sdxl_refiner_cache = 3
    assert (options.residency_policy(), options.cache_capacity()) == ("lowvram", 3)


@pytest.mark.parametrize(
    ("panel", "ours", "flag", "webui_setting", "expected"),
    [
        ("first", "both", None, "second pass", "first"),
        ("default", "both", None, "second pass", "both"),
        ("default", "webui", None, "first pass", "first"),
        ("default", "webui", "second", "first pass", "second"),
        ("default", "webui", "webui", "both passes", "both"),
    ],
)
def test_default_hires_pass_resolves_panel_then_flag_then_setting_then_webui(
    webui, panel, ours, flag, webui_setting, expected  # noqa: F811
) -> None:
    from sdxl_refiner.host import options

    options.add_options()
    webui.shared.opts.sdxl_refiner_hires_pass = ours
    webui.shared.opts.hires_fix_refiner_pass = webui_setting
    webui.shared.cmd_opts.sdxl_refiner_hires_pass = flag
    assert options.effective_hires_pass(Settings(hires_pass=panel)) == expected


def test_preload_flags_parse_and_refuse_bad_values() -> None:
    import argparse

    import preload

    parser = argparse.ArgumentParser()
    preload.preload(parser)
    args = parser.parse_args(["--sdxl-refiner-residency", "offload", "--sdxl-refiner-cache", "2",
                              "--sdxl-refiner-hires-pass", "both"])
    assert (args.sdxl_refiner_residency, args.sdxl_refiner_cache, args.sdxl_refiner_hires_pass) == ("offload", 2, "both")
    assert parser.parse_args([]).sdxl_refiner_residency is None
    for bad in (["--sdxl-refiner-residency", "gpu"], ["--sdxl-refiner-cache", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_preload_flag_choices_are_the_settings_choices() -> None:
    import preload
    from sdxl_refiner.core.residency import RESIDENCY_POLICIES
    from sdxl_refiner.host import options

    assert preload.RESIDENCY_CHOICES == RESIDENCY_POLICIES
    assert preload.HIRES_PASS_CHOICES == options.HIRES_PASS_CHOICES


def test_install_checks_and_installs_nothing(tmp_path, monkeypatch, capsys) -> None:
    import install

    assert install.missing_requirements([tmp_path]) == []
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    assert install.missing_requirements([tmp_path]) == ["torch", "safetensors", "k_diffusion"]
    sampling = tmp_path / "repositories" / "k-diffusion" / "k_diffusion" / "sampling.py"
    sampling.parent.mkdir(parents=True)
    sampling.write_text("")
    assert install.missing_requirements([tmp_path]) == ["torch", "safetensors"]
    monkeypatch.setattr(install, "webui_roots", lambda: [tmp_path])
    assert install.main() == 0
    assert "installs nothing" in capsys.readouterr().err


def test_a_webui_without_the_sampling_hook_gets_a_notice_in_the_panel(checkpoints, monkeypatch) -> None:
    from sdxl_refiner.host import ui

    assert ui.refining_supported()
    with gr.Blocks() as supported:
        ui.build_panel(False)
    monkeypatch.delattr(checkpoints.scripts.Script, "process_before_every_sampling")
    with gr.Blocks() as old_webui:
        ui.build_panel(False)

    def ids(blocks) -> set:
        return {getattr(block, "elem_id", None) for block in blocks.blocks.values()}

    assert "sdxl_refiner_txt2img_unsupported" not in ids(supported)
    assert "sdxl_refiner_txt2img_unsupported" in ids(old_webui)
