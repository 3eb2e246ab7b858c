"""Which host with Forge's backend the Forge live tests drive: Forge 2 or Forge Neo, one already
running (``FORGE_URL``, with ``FORGE_KIND=neo`` for a Neo), or the project's own.

With ``SDXL_REFINER_FORGE_HOST`` set to the folder that ``python -m tests.live.host build --forge``
printed (or ``SDXL_REFINER_NEO_HOST`` to the one of ``build --neo``), the tests start that host
themselves and stop it at the end. ``FORGE_CONSOLE`` names the console log of a host started by
hand (the tests read it to see what it loaded). Without any of these every Forge live test skips.
The same tests run against both hosts; ``Family`` holds what the tests expect differently of each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.live import host
from tests.live.webui_api import (
    FORGE_BASE,
    FORGE_BASE_COPY,
    FORGE_BASE_FINETUNE,
    FORGE_REFINER,
    FORGE_REFINER_OWN_TEXT,
    WebUIApi,
)


@dataclass(frozen=True)
class Family:
    """What the tests expect differently of Forge 2 and Forge Neo."""

    kind: host.HostKind
    host_name: str  # as our messages name it
    # the samplers it lists whose model calls cannot be split at a step boundary; each is refused by name
    refused_samplers: frozenset[str]
    accepted_samplers_at_least: int
    # the refiner its own built-in refiner is compared with, and the options under which that one
    # switches at a step (Neo's switches at a sigma by default, and fails on refiner-type files)
    builtin_refiner: str
    builtin_options: dict = field(default_factory=dict)
    # its x/y/z script's arguments after the three axes (Neo's has a row count before the margin)
    xyz_options: tuple = (True, True, False, False, False, False, False, 0, False)
    hires_upscaler: str = "Latent"


FORGE_2 = Family(
    kind=host.FORGE, host_name="Forge",
    refused_samplers=frozenset({"Restart", "DDIM CFG++", "UniPC", "HeunPP2"}), accepted_samplers_at_least=19,
    builtin_refiner=FORGE_REFINER,
)
FORGE_NEO = Family(
    kind=host.NEO, host_name="Forge Neo",
    refused_samplers=frozenset({"Restart", "UniPC", "DPM++ 2s a RF", "ER SDE", "Res Multistep", "Kohaku LoNyu Yog",
                                "DPM++ 2M CFG++", "Euler a CFG++", "Euler CFG++"}),
    accepted_samplers_at_least=12,
    builtin_refiner=FORGE_BASE_FINETUNE, builtin_options={"refiner_use_steps": True},
    xyz_options=(True, True, False, False, False, False, False, 0, 0, False),
    hires_upscaler="None",
)
FAMILIES = {"forge": FORGE_2, "neo": FORGE_NEO}


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

    def bytes_read(self) -> int | None:
        """What the started Forge has read so far (``host.bytes_read``); None for one found at ``FORGE_URL``."""
        return host.bytes_read(self.running) if self.running is not None else None

    def console(self) -> str:
        return self.console_path.read_text(errors="replace") if self.console_path else ""

    def close(self) -> None:
        if self.running is not None:
            host.stop(self.running)
            self.running = None


@pytest.fixture(scope="session")
def family() -> Family:
    if os.environ.get("SDXL_REFINER_FORGE_HOST") and os.environ.get("SDXL_REFINER_NEO_HOST"):
        pytest.fail("set one of SDXL_REFINER_FORGE_HOST and SDXL_REFINER_NEO_HOST: the tests drive one host a run")
    if os.environ.get("SDXL_REFINER_NEO_HOST"):
        return FORGE_NEO
    return FAMILIES[os.environ.get("FORGE_KIND", "forge")]


@pytest.fixture(scope="session")
def forge_host(family: Family) -> Iterator[ForgeHost]:
    root = os.environ.get("SDXL_REFINER_NEO_HOST" if family is FORGE_NEO else "SDXL_REFINER_FORGE_HOST")
    url = os.environ.get("FORGE_URL")
    if not root and not url:
        pytest.skip("no Forge to test against: set SDXL_REFINER_FORGE_HOST (or SDXL_REFINER_NEO_HOST) to the folder "
                    "that `python -m tests.live.host build --forge` (or `--neo`) prints, or FORGE_URL to a running one")
    console = os.environ.get("FORGE_CONSOLE")
    managed = ForgeHost(host.Install(Path(root), family.kind) if root else None, None if root else url,
                        Path(console) if console else None)
    try:
        yield managed
    finally:
        managed.close()


@pytest.fixture(scope="session")
def forge_api(forge_host: ForgeHost) -> WebUIApi:
    client = forge_host.api()
    titles = [model["title"] for model in client.call("/sdapi/v1/sd-models")]
    for name in (FORGE_BASE, FORGE_BASE_COPY, FORGE_REFINER, FORGE_REFINER_OWN_TEXT, FORGE_BASE_FINETUNE):
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
