"""Which WebUI the live tests drive: one already running (``WEBUI_URL``), or the project's own host.

With ``SDXL_REFINER_HOST`` set to a folder that ``python -m tests.live.host build`` made, the
tests start that WebUI themselves, restart it when a test asks for other flags (``--medvram``,
``--lowvram``), and stop it at the end. A WebUI someone started by hand cannot be restarted, so
those tests skip there. Without either variable every live test skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.live import host
from tests.live.webui_api import BASE_COPY, REFINER, WebUIApi


class Hosts:
    """The one WebUI of the session, started on demand with the flags the next test needs."""

    def __init__(self, install: host.Install | None, external_url: str | None):
        self.install = install
        self.external_url = external_url
        self.running: host.Running | None = None

    def api(self, flags: Sequence[str] = (), fresh: bool = False) -> WebUIApi:
        """``fresh`` restarts even a WebUI with these flags: its float results can move by a unit in
        the last place once another model type has been loaded (seen after an SD 1.x model or the
        built-in refiner), so images compared across restarts must all come from fresh processes."""
        if self.install is None:
            if flags or fresh:
                pytest.skip(f"{' '.join(flags) or 'a fresh start'} needs a WebUI these tests can restart "
                            "(SDXL_REFINER_HOST)")
            assert self.external_url is not None
            return WebUIApi(self.external_url)
        if (fresh or self.running is None or self.running.flags != tuple(flags)
                or self.running.process.poll() is not None):
            self.close()
            self.running = host.start(self.install, flags)
        return WebUIApi(self.running.url)

    def bytes_read(self) -> int | None:
        """What the started WebUI has read so far (``host.bytes_read``); None for one started by hand."""
        return host.bytes_read(self.running) if self.running is not None else None

    def console(self) -> str:
        return host.console_tail(self.running) if self.running is not None else ""

    def close(self) -> None:
        if self.running is not None:
            host.stop(self.running)
            self.running = None


@pytest.fixture(scope="session")
def hosts() -> Iterator[Hosts]:
    root = os.environ.get("SDXL_REFINER_HOST")
    url = os.environ.get("WEBUI_URL")
    if not root and not url:
        pytest.skip("no WebUI to test against: set WEBUI_URL, or SDXL_REFINER_HOST (see tests/live/README.md)")
    managed = Hosts(host.Install(Path(root)) if root else None, None if root else url)
    try:
        yield managed
    finally:
        managed.close()


@pytest.fixture
def console(hosts: Hosts) -> Callable[[], str]:
    """Reads the whole console of the WebUI these tests started, or ``WEBUI_CONSOLE``'s (the log of
    one started by hand)."""
    given = os.environ.get("WEBUI_CONSOLE")
    if hosts.install is None and not given:
        pytest.skip("the WebUI's console is not known: set WEBUI_CONSOLE for a WebUI started by hand")

    def read() -> str:
        path = hosts.running.log if hosts.running is not None else Path(given or "")
        return path.read_text(errors="replace")

    return read


@pytest.fixture(scope="module")
def api(hosts: Hosts) -> WebUIApi:
    """The WebUI with its default flags, holding the tiny checkpoints."""
    client = hosts.api()
    require_checkpoints(client)
    return client


def require_checkpoints(client: WebUIApi) -> None:
    titles = [model["title"] for model in client.call("/sdapi/v1/sd-models")]
    for name in (BASE_COPY, REFINER):
        if not any(name in title for title in titles):
            pytest.skip(f"checkpoint {name} is not in the WebUI (run tests/live/make_tiny_checkpoints.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failing live test shows the end of the WebUI's console: the traceback is there."""
    outcome = yield
    report = outcome.get_result()
    managed = item.funcargs.get("hosts") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(managed, Hosts) and managed.running is not None:
        report.sections.append(("WebUI console (last lines)", managed.console()))
