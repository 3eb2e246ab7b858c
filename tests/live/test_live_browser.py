"""The panel in a real browser (Debian's chromium, driven by Playwright) on the real WebUI page.

What only a browser sees: the panel's markup in both tabs, the split line that our javascript
keeps in step with the sliders, a generation started from the UI, paste from PNG Info, the X/Y/Z
axes in the page's own config, and no script errors on the page. With
``SDXL_REFINER_SCREENSHOT=docs/panel.png`` the panel test refreshes the README's picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdxl_refiner.host.ui import ELEM_PREFIX, elem_id
from sdxl_refiner.host.xyz import (
    AXIS_AESTHETIC_SCORE,
    AXIS_CFG_SCALE,
    AXIS_CHECKPOINT,
    AXIS_NOISE_MULTIPLIER,
    AXIS_STEPS_PERCENT,
)
from tests.live.browser import Page, launched_chromium
from tests.live.webui_api import BASE, REFINER, SD1, WebUIApi, ours

pytestmark = pytest.mark.live
# The WebUI's own page errors, each seen with this extension disabled (--disable-extra-extensions):
# gradio 3.41's Blocks throws this whenever the txt2img width or height changes.
HOST_ERRORS = (("Cannot read properties of undefined (reading 'props')", "/assets/Blocks-"),)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launched_chromium()


@pytest.fixture
def page(browser, api: WebUIApi) -> Iterator[Page]:
    opened = Page(browser, api.url, HOST_ERRORS)
    yield opened
    assert not opened.errors, "\n".join(opened.errors)
    opened.page.close()


def test_the_panel_is_in_both_tabs_and_the_split_line_follows_steps_and_denoising(page):
    page.turn_on("txt2img")
    page.number("txt2img_steps", 30)
    page.wait_for_split("txt2img", "Base: steps 1–24 · Refiner: steps 25–30")
    page.number(elem_id("txt2img", "steps_percent"), 10)
    page.wait_for_split("txt2img", "Base: steps 1–27 · Refiner: steps 28–30")
    page.page.locator(f"#{elem_id('txt2img', 'advanced')} .label-wrap").first.click()
    screenshot = os.environ.get("SDXL_REFINER_SCREENSHOT")
    if screenshot:
        # the README's picture: the default share, a refiner chosen, the advanced controls open
        page.number(elem_id("txt2img", "steps_percent"), 20)
        page.pick(elem_id("txt2img", "checkpoint"), REFINER)
        page.page.locator(f"#{elem_id('txt2img', 'checkpoint')} ul.options").wait_for(state="hidden")
        page.page.wait_for_timeout(500)  # the list's closing transition
        page.page.locator(f"#{ELEM_PREFIX}_txt2img").screenshot(path=str(Path(screenshot)))
    # a refiner noise that the chosen sampler cannot apply is named under the slider
    page.pick("txt2img_sampling", "DPM++ 2M")
    page.number(elem_id("txt2img", "noise_multiplier"), 0.5)
    page.wait_for_split("txt2img", "Refiner noise has no effect with DPM++ 2M: it adds no ancestral or SDE noise.")
    page.pick("txt2img_sampling", "Euler a")
    page.page.wait_for_function(
        "(id) => !gradioApp().querySelector('#' + id).textContent.includes('Refiner noise')",
        arg=elem_id("txt2img", "split"))
    page.number(elem_id("txt2img", "noise_multiplier"), 1)

    page.tab("img2img")
    page.turn_on("img2img")
    page.number("img2img_steps", 30)
    page.number("img2img_denoising_strength", 0.5)
    # img2img runs int(0.5 · 30) + 1 = 16 steps; the refiner takes floor(16 · 0.2 + 0.5) = 3 of them
    page.wait_for_split("img2img", "Base: steps 1–13 · Refiner: steps 14–16")
    page.number("img2img_denoising_strength", 1)
    page.wait_for_split("img2img", "Refiner: steps 25–30")


def test_a_generation_from_the_ui_runs_the_refiner_and_the_info_says_so(page):
    page.turn_on("txt2img")
    page.pick(elem_id("txt2img", "checkpoint"), REFINER.removesuffix(".safetensors"))
    for elem, value in (("txt2img_steps", 8), ("txt2img_width", 64), ("txt2img_height", 64),
                        (elem_id("txt2img", "steps_percent"), 25)):
        page.number(elem, value)
    page.page.locator("#txt2img_prompt textarea").fill("a red fox in the snow")
    page.page.locator(f"#{elem_id('txt2img', 'advanced')} .label-wrap").first.click()
    page.page.locator(f"#{elem_id('txt2img', 'prompt')} textarea").fill("film grain")
    page.number(elem_id("txt2img", "cfg_scale"), 3.5)
    page.page.locator("#txt2img_generate").click()
    page.page.wait_for_function(
        "() => (gradioApp().querySelector('#html_info_txt2img') || {}).textContent.includes('SDXL Refiner split')")
    info = page.page.locator("#html_info_txt2img").first.inner_text()  # gradio 3 repeats the id inside
    assert "SDXL Refiner split: base 6 / refiner 2" in info
    assert "SDXL Refiner steps: 25%" in info
    assert "SDXL Refiner prompt: film grain" in info
    assert "SDXL Refiner CFG scale: 3.5" in info


def test_a_refusal_from_the_ui_shows_in_the_error_box_as_the_webuis_own_errors(page):
    """The WebUI shows a failed generation as ``<div class='error'>`` with the error's class and
    message under the gallery; a refusal of ours is shown there, named as the API names it."""
    page.turn_on("txt2img")
    page.pick(elem_id("txt2img", "checkpoint"), SD1.removesuffix(".safetensors"))
    for elem, value in (("txt2img_steps", 4), ("txt2img_width", 64), ("txt2img_height", 64)):
        page.number(elem, value)
    page.page.locator("#txt2img_generate").click()
    page.page.wait_for_function(
        "() => (gradioApp().querySelector('#html_log_txt2img .error') || {}).textContent")
    shown = page.page.locator("#html_log_txt2img .error").first.inner_text()
    assert shown.startswith(f"CheckpointError: SDXL Refiner checkpoint '{SD1}")
    assert "is an SD 1.x checkpoint" in shown


def png_with_infotext(api: WebUIApi, tmp_path: Path, name: str, **fields) -> Path:
    import base64

    response = api.txt2img(**fields)
    path = tmp_path / name
    path.write_bytes(base64.b64decode(response["images"][0]))
    return path


def test_png_info_send_to_txt2img_restores_our_fields_and_a_plain_infotext_turns_the_toggle_off(page, api, tmp_path):
    refined = png_with_infotext(api, tmp_path, "refined.png", refiner=ours(
        REFINER, 30, aesthetic_score=7, prompt="film grain, pores", negative_prompt="smudge", cfg_scale=4.5,
        noise_multiplier=0.85))
    plain = png_with_infotext(api, tmp_path, "plain.png")
    checkbox = page.page.locator(f"#{ELEM_PREFIX}_txt2img-checkbox input[type=checkbox]")

    page.send_to_txt2img(refined, has_our_keys=True)
    assert checkbox.is_checked()
    assert page.page.locator(f"#{elem_id('txt2img', 'steps_percent')} input[type=number]").input_value() == "30"
    assert REFINER.removesuffix(".safetensors") in page.page.locator(
        f"#{elem_id('txt2img', 'checkpoint')} input").input_value()
    assert page.page.locator(f"#{elem_id('txt2img', 'aesthetic_score')} input[type=number]").input_value() == "7"
    assert page.page.locator(f"#{elem_id('txt2img', 'prompt')} textarea").input_value() == "film grain, pores"
    assert page.page.locator(f"#{elem_id('txt2img', 'negative_prompt')} textarea").input_value() == "smudge"
    assert page.page.locator(f"#{elem_id('txt2img', 'cfg_scale')} input[type=number]").input_value() == "4.5"
    assert page.page.locator(f"#{elem_id('txt2img', 'noise_multiplier')} input[type=number]").input_value() == "0.85"

    page.send_to_txt2img(plain, has_our_keys=False)
    assert not checkbox.is_checked()
    assert page.page.locator(f"#{elem_id('txt2img', 'prompt')} textarea").input_value() == "film grain, pores"


def test_our_xyz_axes_are_among_the_x_type_choices_of_both_tabs(page):
    for tab in ("txt2img", "img2img"):
        choices = page.page.evaluate(
            """(id) => {
                const found = gradio_config.components.find(c => c.props && c.props.elem_id === id);
                return found ? found.props.choices.map(choice => Array.isArray(choice) ? choice[0] : choice) : null;
            }""", f"script_{tab}_xyz_plot_x_type")
        assert choices is not None, f"no X type dropdown in the {tab} page"
        ours_all = {AXIS_STEPS_PERCENT, AXIS_CHECKPOINT, AXIS_AESTHETIC_SCORE, AXIS_CFG_SCALE, AXIS_NOISE_MULTIPLIER}
        assert ours_all <= set(choices)


def test_the_base_is_still_the_loaded_checkpoint_after_the_browser_session(api):
    assert BASE in api.call("/sdapi/v1/options")["sd_model_checkpoint"]
