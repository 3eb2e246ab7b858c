"""The extension's panel in a real browser: Debian's chromium driven by Playwright, one page per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdxl_refiner.host.ui import ELEM_PREFIX, elem_id

CHROMIUM = os.environ.get("SDXL_REFINER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 60_000


def launched_chromium() -> Iterator[object]:
    """Debian's chromium under Playwright, for a module-scoped fixture; skips without either."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium, or set SDXL_REFINER_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """One WebUI (or Forge) page, with every script error and console error it reports kept for the end.

    ``host_errors``: (message, place in the stack) of the host's own page errors, seen with this
    extension disabled, which are not ours to report."""

    def __init__(self, browser: object, url: str, host_errors: tuple[tuple[str, str], ...] = ()):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1600})
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.host_errors = host_errors
        self.origin = url.rstrip("/")
        self.page.on("pageerror", self._page_error)
        self.page.on("console", self._console)
        self.page.goto(url)
        self.page.wait_for_selector(f"#{ELEM_PREFIX}_txt2img", state="attached")
        self.page.wait_for_function("() => typeof gradioApp === 'function' && gradioApp().querySelector('#txt2img_generate')")

    def _page_error(self, error: object) -> None:
        if not any(error.message == message and place in (error.stack or "") for message, place in self.host_errors):
            self.errors.append(f"page error: {error}\n{error.stack}")

    def _console(self, message: object) -> None:
        """Errors of the page itself; a resource from another host (gradio links a CDN script) cannot
        load on an offline machine, and says nothing about the page."""
        source = (message.location or {}).get("url", "")
        if message.type == "error" and "favicon" not in message.text and not self._elsewhere(source):
            self.errors.append(f"console error: {message.text} ({source})")

    def _elsewhere(self, url: str) -> bool:
        return url.startswith(("http://", "https://")) and not url.startswith(self.origin)

    def tab(self, name: str) -> None:
        self.page.locator("#tabs > .tab-nav > button", has_text=name).first.click()

    def number(self, elem: str, value: float) -> None:
        field = self.page.locator(f"#{elem} input[type=number]")
        field.fill(str(value))
        field.dispatch_event("input")
        field.press("Tab")

    def turn_on(self, tab: str) -> None:
        if not self.page.locator(f"#{ELEM_PREFIX}_{tab}-checkbox input[type=checkbox]").is_checked():
            self.page.locator(f"#{ELEM_PREFIX}_{tab} .label-wrap").first.click()
        self.page.wait_for_function(
            f"() => gradioApp().querySelector('#{ELEM_PREFIX}_{tab}-checkbox input[type=checkbox]').checked")

    def split_line(self, tab: str) -> str:
        return self.page.locator(f"#{elem_id(tab, 'split')}").inner_text()

    def wait_for_split(self, tab: str, text: str) -> None:
        self.page.wait_for_function(
            "([id, text]) => (gradioApp().querySelector('#' + id) || {}).textContent.includes(text)",
            arg=[elem_id(tab, "split"), text])

    def send_to_txt2img(self, png: Path, has_our_keys: bool) -> None:
        """PNG Info reads the file's infotext, and "Send to txt2img" pastes it; each wait ends when
        the page shows this file's infotext, then when our toggle has followed it."""
        expect = "" if has_our_keys else "!"
        self.tab("PNG Info")
        self.page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
        self.page.wait_for_function(
            f"() => {expect}gradioApp().querySelector('#tab_pnginfo').textContent.includes('SDXL Refiner')")
        self.page.locator("#tab_pnginfo button", has_text="Send to txt2img").first.click()
        self.page.wait_for_function(
            f"() => {expect}gradioApp().querySelector('#{ELEM_PREFIX}_txt2img-checkbox input[type=checkbox]').checked")

    def pick(self, elem: str, value: str, attempts: int = 3) -> None:
        """A gradio dropdown: type into it, take the matching option once the list shows it, and
        check that the field still shows it once it lost the focus.

        Gradio 4.40 (Forge Neo's) filters the list as it is typed into; a click that lands while
        the list is redrawn can select nothing, and the text typed then reverts on blur. So the
        choice is checked after the blur, and made again."""
        field = self.page.locator(f"#{elem} input")
        for _ in range(attempts):
            field.click()
            field.fill(value)
            option = self.page.locator(f"#{elem} ul.options li", has_text=value).first
            option.wait_for(state="visible")
            option.click()
            field.press("Tab")
            self.page.wait_for_timeout(500)
            if value in field.input_value():
                return
        raise AssertionError(f"the dropdown {elem} did not keep {value!r} after {attempts} attempts")


