"""Which Forge 2 the Forge live tests drive: one already running (``FORGE_URL``), or the project's own.

With ``SDXL_REFINER_FORGE_HOST`` set to the folder that ``python -m tests.live.host build --forge``
printed, the tests start that Forge themselves and stop it at the end. ``FORGE_CONSOLE`` names the
console log of a Forge started by hand (the tests read it to see what Forge loaded). Without
either variable every Forge live test skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.live import host
from tests.live.webui_api import FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER, FORGE_REFINER_OWN_TEXT, WebUIApi


class ForgeHost:
    """The one Forge of the session: started here, or found at ``FORGE_URL``."""

    def __init__(self, install: host.Install | None, url: str | None, console: Path | None):
        self.install = install
        self.running: host.Running | None = None
        self.url = url
        self.console_path = console

    def api(self) -> WebUIApi:
        if self.install is not None and (self.running is None or self.running.process.poll() is not None):
            self.close()
            self.running = host.start(self.install)
            self.url, self.console_path = self.running.url, self.running.log
        assert self.url is not None
        return WebUIApi(self.url)

    def resident_bytes(self) -> int | None:
        """The started Forge's resident memory (``VmRSS``); None for one found at ``FORGE_URL``."""
        if self.running is None:
            return None
        for line in Path(f"/proc/{self.running.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def console(self) -> str:
        return self.console_path.read_text(errors="replace") if self.console_path else ""

    def close(self) -> None:
        if self.running is not None:
            host.stop(self.running)
            self.running = None


@pytest.fixture(scope="session")
def forge_host() -> Iterator[ForgeHost]:
    root = os.environ.get("SDXL_REFINER_FORGE_HOST")
    url = os.environ.get("FORGE_URL")
    if not root and not url:
        pytest.skip("no Forge to test against: set SDXL_REFINER_FORGE_HOST to the folder that "
                    "`python -m tests.live.host build --forge` prints, or FORGE_URL to a running Forge")
    console = os.environ.get("FORGE_CONSOLE")
    managed = ForgeHost(host.Install(Path(root), host.FORGE) if root else None, None if root else url,
                        Path(console) if console else None)
    try:
        yield managed
    finally:
        managed.close()


@pytest.fixture(scope="session")
def forge_api(forge_host: ForgeHost) -> WebUIApi:
    client = forge_host.api()
    titles = [model["title"] for model in client.call("/sdapi/v1/sd-models")]
    for name in (FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER, FORGE_REFINER_OWN_TEXT):
        if not any(name in title for title in titles):
            pytest.fail(f"checkpoint {name} is not in Forge's list (tests/live/make_forge_checkpoints.py writes it)")
    return client


@pytest.fixture
def forge_console(forge_host: ForgeHost) -> Callable[[], str]:
    if forge_host.console_path is None:
        pytest.skip("the Forge console is not known: set FORGE_CONSOLE for a Forge started by hand")
    return forge_host.console


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failing Forge test shows the end of Forge's console: the traceback is there."""
    outcome = yield
    report = outcome.get_result()
    managed = item.funcargs.get("forge_host") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(managed, ForgeHost):
        report.sections.append(("Forge console (last lines)", managed.console()[-6000:]))
