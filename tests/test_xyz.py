"""X/Y/Z plot axes: registered once, found through scripts_data, values on the processing object."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.settings import from_ui_args
from tests.standin.fixtures import webui  # noqa: F401 - the fixture

XYZ_GRID = Path(__file__).resolve().parent / "standin" / "webui_scripts" / "xyz_grid.py"
PANEL_OFF = [False, "", 20, 6.0, 2.5, 0, "Default (from settings)"]


@pytest.fixture
def grid(webui):  # noqa: F811
    """The WebUI with xyz_grid.py loaded as a script, and two checkpoints."""
    spec = importlib.util.spec_from_file_location("xyz_grid.py", XYZ_GRID)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script_class = type("Script", (webui.scripts.Script,), {"title": lambda self: "X/Y/Z plot"})
    webui.scripts.scripts_data.append(
        webui.scripts.ScriptClassData(script_class, str(XYZ_GRID), str(XYZ_GRID.parent.parent), module)
    )
    for name in ("sd_xl_refiner_1.0.safetensors", "Zeta refiner.safetensors", "alpha.safetensors"):
        path = webui.models_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    webui.sd_models.list_models()
    webui.xyz_grid = module
    return webui


def register(webui) -> dict:  # noqa: F811
    from sdxl_refiner.host import xyz

    webui.script_callbacks.clear_callbacks()
    xyz.register_callbacks()
    webui.script_callbacks.before_ui_callback()
    return {option.label: option for option in webui.xyz_grid.axis_options}


def test_axes_are_registered_once_however_often_the_ui_is_built(grid) -> None:
    from sdxl_refiner.host import xyz

    before = [option.label for option in grid.xyz_grid.axis_options]
    register(grid)
    xyz.register_callbacks()
    grid.script_callbacks.before_ui_callback()
    grid.script_callbacks.before_ui_callback()
    assert len(grid.script_callbacks.callback_map["callbacks_before_ui"]) == 1
    labels = [option.label for option in grid.xyz_grid.axis_options]
    assert labels == [*before, xyz.AXIS_STEPS_PERCENT, xyz.AXIS_CHECKPOINT, xyz.AXIS_AESTHETIC_SCORE,
                      xyz.AXIS_CFG_SCALE, xyz.AXIS_NOISE_MULTIPLIER, xyz.AXIS_PROMPT_SR]
    assert all(label.startswith("SDXL Refiner") for label in labels[len(before):])


@pytest.mark.parametrize(
    ("axis", "value", "label"),
    [
        ("SDXL Refiner steps %", 20.0, "SDXL Refiner steps %: 20"),
        ("SDXL Refiner steps %", 12.5, "SDXL Refiner steps %: 12.5"),
        ("SDXL Refiner steps %", 0.0, "SDXL Refiner steps %: 0 (off)"),
        ("SDXL Refiner aesthetic score", 6.0, "SDXL Refiner aesthetic score: 6"),
        ("SDXL Refiner aesthetic score", 7.25, "SDXL Refiner aesthetic score: 7.25"),
        ("SDXL Refiner CFG scale", 4.0, "SDXL Refiner CFG scale: 4"),
        ("SDXL Refiner CFG scale", 0.0, "SDXL Refiner CFG scale: 0 (the generation's)"),
        ("SDXL Refiner noise", 0.85, "SDXL Refiner noise: 0.85"),
        ("SDXL Refiner noise", 1.0, "SDXL Refiner noise: 1"),
    ],
)
def test_grid_labels_write_whole_numbers_without_a_decimal_point(grid, axis, value, label) -> None:
    option = register(grid)[axis]
    assert option.format_value(grid.txt2img(), option, value) == label


def test_without_the_xyz_script_nothing_is_registered_and_nothing_fails(webui, capsys) -> None:  # noqa: F811
    from sdxl_refiner.host import xyz

    webui.scripts.scripts_data.clear()
    xyz.register_axes()
    assert "X/Y/Z plot script is not loaded" in capsys.readouterr().out


def test_steps_axis_zero_is_off_and_other_values_turn_the_refiner_on(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    title = grid.checkpoint("sd_xl_refiner_1.0.safetensors").title
    p = grid.txt2img()
    panel = [True, title, 25, 6.0, 2.5, 12, "Default (from settings)"]
    results = grid.xyz_grid.run_cells(
        p, [(axes[xyz.AXIS_STEPS_PERCENT], ["0", "10", "30"])], lambda pc: from_ui_args(panel, xyz.overrides(pc))
    )
    assert [s.refiner_off for s in results] == [True, False, False]
    assert [(s.steps_percent, s.start_step) for s in results] == [(0.0, None), (10.0, None), (30.0, None)]
    assert not hasattr(p, xyz.XYZ_ATTR)


def test_two_axes_combine_per_cell_without_leaking_between_cells(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    titles = xyz.checkpoint_titles()
    results = grid.xyz_grid.run_cells(
        grid.txt2img(),
        [(axes[xyz.AXIS_CHECKPOINT], titles), (axes[xyz.AXIS_AESTHETIC_SCORE], ["5", "7.5"])],
        lambda pc: from_ui_args(PANEL_OFF, xyz.overrides(pc)),
    )
    assert [(s.enabled, s.checkpoint, s.aesthetic_score) for s in results] == [
        (True, title, score) for score in (5.0, 7.5) for title in titles
    ]


def test_checkpoint_axis_offers_the_checkpoint_list_and_refuses_unknown_names(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    option = axes[xyz.AXIS_CHECKPOINT]
    assert option.choices() == sorted(grid.sd_models.checkpoints_list, key=str.casefold)
    assert option.cost > 0
    with pytest.raises(SettingsError) as caught:
        grid.xyz_grid.run_cells(grid.txt2img(), [(option, ["alpha", "beta"])], lambda pc: None)
    assert str(caught.value) == (
        "SDXL Refiner: X/Y/Z axis 'SDXL Refiner checkpoint': 'beta' is not a checkpoint of this WebUI. "
        "Pick values from the axis' dropdown, or refresh the checkpoint list."
    )
    assert caught.value.status_code == 404, "an unknown name is answered as the WebUI answers its own"


def test_cfg_and_noise_axes_set_the_refiners_values_per_cell_and_leave_the_rest(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    title = grid.checkpoint("sd_xl_refiner_1.0.safetensors").title
    panel = [True, title, 25, 6.0, 2.5, 0, "Default (from settings)", "grain", "", 3.0, 0.9]
    results = grid.xyz_grid.run_cells(
        grid.txt2img(),
        [(axes[xyz.AXIS_CFG_SCALE], ["0", "4.5"]), (axes[xyz.AXIS_NOISE_MULTIPLIER], ["1", "0.5"])],
        lambda pc: from_ui_args(panel, xyz.overrides(pc)),
    )
    assert [(s.cfg_scale, s.noise_multiplier) for s in results] == [(0.0, 1.0), (4.5, 1.0), (0.0, 0.5), (4.5, 0.5)]
    assert {(s.enabled, s.checkpoint, s.steps_percent, s.prompt) for s in results} == {(True, title, 25.0, "grain")}


def test_an_out_of_range_noise_on_its_axis_gets_the_normalisers_message(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    with pytest.raises(SettingsError, match=re.escape("'noise_multiplier' must be a number from 0 to 1.5; got 2.0")):
        grid.xyz_grid.run_cells(
            grid.txt2img(), [(axes[xyz.AXIS_NOISE_MULTIPLIER], ["2"])],
            lambda pc: from_ui_args(PANEL_OFF, xyz.overrides(pc)),
        )


def test_aesthetic_axis_alone_leaves_the_refiner_off(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    results = grid.xyz_grid.run_cells(
        grid.txt2img(), [(axes[xyz.AXIS_AESTHETIC_SCORE], ["8"])], lambda pc: from_ui_args(PANEL_OFF, xyz.overrides(pc))
    )
    assert [(s.enabled, s.aesthetic_score) for s in results] == [(False, 8.0)]


def test_an_out_of_range_axis_value_gets_the_normalisers_message(grid) -> None:
    from sdxl_refiner.host import xyz

    axes = register(grid)
    with pytest.raises(SettingsError, match=re.escape("'steps_percent' must be a number from 0 to 100; got 150.0")):
        grid.xyz_grid.run_cells(
            grid.txt2img(), [(axes[xyz.AXIS_STEPS_PERCENT], ["150"])],
            lambda pc: from_ui_args(PANEL_OFF, xyz.overrides(pc)),
        )


def test_a_zero_percent_cell_after_a_refined_cell_has_no_refiner_infotext(grid) -> None:
    """Every cell runs a shallow copy of one p, so all cells start from the same infotext dict."""
    from sdxl_refiner.host import xyz
    from tests.standin.refiner_runs import load_script, ui_args

    grid.write_pair()
    axes = register(grid)
    p = grid.txt2img(steps=4)
    grid.attach(p, load_script(), ui_args(steps_percent=25))
    results = grid.xyz_grid.run_cells(p, [(axes[xyz.AXIS_STEPS_PERCENT], ["50", "0", "25"])], grid.run)
    refined, off, again = (result.infotexts[0] for result in results)
    assert "SDXL Refiner split: base 2 / refiner 2" in refined
    assert "SDXL Refiner" not in off
    assert "SDXL Refiner split: base 3 / refiner 1" in again
    assert not any(key.startswith("SDXL Refiner") for key in p.extra_generation_params)
