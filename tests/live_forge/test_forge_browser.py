"""The panel in the page of Forge 2 or Forge Neo (gradio 4), in a real browser (Debian's chromium, via Playwright).

What the API cannot show: that the panel is built and works under gradio 4 in both tabs (the
toggle, the split line our javascript keeps in step with the sliders, the checkpoint dropdown), a
generation started from the page, and no script errors on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sdxl_refiner.host.ui import ELEM_PREFIX, elem_id
from tests.live.browser import Page, launched_chromium
from tests.live.webui_api import FORGE_BASE, FORGE_REFINER, WebUIApi

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launched_chromium()


@pytest.fixture
def page(browser, forge_api: WebUIApi) -> Iterator[Page]:
    opened = Page(browser, forge_api.url)
    yield opened
    assert not opened.errors, "\n".join(opened.errors)
    opened.page.close()


def test_the_panel_is_in_both_tabs_and_the_split_line_follows_steps_and_denoising(page):
    page.turn_on("txt2img")
    assert page.page.locator(f"#{ELEM_PREFIX}_txt2img-visible-checkbox").is_checked()
    page.number("txt2img_steps", 30)
    page.wait_for_split("txt2img", "Base: steps 1–24 · Refiner: steps 25–30")
    page.number(elem_id("txt2img", "steps_percent"), 10)
    page.wait_for_split("txt2img", "Base: steps 1–27 · Refiner: steps 28–30")

    page.tab("Img2img")
    page.turn_on("img2img")
    page.number("img2img_steps", 30)
    page.number("img2img_denoising_strength", 0.5)
    # img2img runs int(0.5 · 30) + 1 = 16 steps; the refiner takes floor(16 · 0.2 + 0.5) = 3 of them
    page.wait_for_split("img2img", "Base: steps 1–13 · Refiner: steps 14–16")


def test_a_generation_from_the_page_runs_the_refiner_and_the_info_says_so(page, forge_api):
    page.page.locator("#txt2img_prompt textarea").fill("a red fox in the snow")
    page.turn_on("txt2img")
    page.pick(elem_id("txt2img", "checkpoint"), FORGE_REFINER)
    for elem, value in (("txt2img_steps", 8), ("txt2img_width", 64), ("txt2img_height", 64),
                        (elem_id("txt2img", "steps_percent"), 25)):
        page.number(elem, value)
    page.page.locator("#txt2img_generate").click()
    page.page.wait_for_function(
        "() => (gradioApp().querySelector('#html_info_txt2img') || {}).textContent.includes('SDXL Refiner split')")
    info = page.page.locator("#html_info_txt2img").first.inner_text()
    assert "SDXL Refiner split: base 6 / refiner 2" in info
    assert "SDXL Refiner steps: 25%" in info
    assert FORGE_REFINER.removesuffix(".safetensors") in info
    assert FORGE_BASE in forge_api.call("/sdapi/v1/options")["sd_model_checkpoint"]


def test_the_checkpoint_field_shows_none_until_a_pick_and_the_first_listed_checkpoint_is_the_one_sent(page):
    """Gradio 4 shows a dropdown whose value it does not list as if its first entry were chosen,
    and a pick of that entry sends nothing: the field showed a checkpoint, the generation got an
    empty one. The entry for no refiner comes first, so what the field shows is what is sent."""
    field = page.page.locator(f"#{elem_id('txt2img', 'checkpoint')} input")
    page.turn_on("txt2img")
    assert field.input_value() == "None"
    field.click()
    listed = page.page.locator(f"#{elem_id('txt2img', 'checkpoint')} ul.options li").all_inner_texts()
    entries = [entry.replace("✓", "").strip() for entry in listed]  # the chosen entry is ticked
    assert entries[0] == "None" and "✓" in listed[0]
    first = entries[1]
    field.blur()
    page.pick(elem_id("txt2img", "checkpoint"), first)
    for elem, value in (("txt2img_steps", 4), ("txt2img_width", 64), ("txt2img_height", 64)):
        page.number(elem, value)
    page.page.locator("#txt2img_generate").click()
    page.page.wait_for_function(
        "() => (gradioApp().querySelector('#html_info_txt2img') || {}).textContent.includes('SDXL Refiner split')")
    info = page.page.locator("#html_info_txt2img").first.inner_text()
    assert f"SDXL Refiner: {first.removesuffix('.safetensors')}" in info


def test_a_refusal_from_the_page_shows_in_the_error_box_as_the_hosts_own_errors(page):
    """Forge shows a failed generation as ``<div class='error'>`` with the error's class and message
    under the gallery; a refusal of ours is shown there, as the API names it."""
    # The tag is refused before the checkpoint is looked at, so no dropdown is involved here.
    page.page.locator("#txt2img_prompt textarea").fill("a red fox in the snow")
    page.turn_on("txt2img")
    for elem, value in (("txt2img_steps", 4), ("txt2img_width", 64), ("txt2img_height", 64)):
        page.number(elem, value)
    page.page.locator(f"#{elem_id('txt2img', 'advanced')} .label-wrap").first.click()
    refiner_prompt = page.page.locator(f"#{elem_id('txt2img', 'prompt')} textarea")
    refiner_prompt.fill("film grain <hypernet:detail:0.8>")
    refiner_prompt.press("Tab")
    page.page.locator("#txt2img_generate").click()
    page.page.wait_for_function("() => (gradioApp().querySelector('#html_log_txt2img .error') || {}).textContent")
    shown = page.page.locator("#html_log_txt2img .error").first.inner_text()
    assert shown.startswith("SettingsError: SDXL Refiner: 'prompt' holds '<hypernet:detail:0.8>': the refiner takes "
                            "LoRAs")
