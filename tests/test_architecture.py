"""The layering is checked by import-linter (``[tool.importlinter]`` in pyproject.toml, ``lint-imports``
in CI): here, that the contracts hold, and that each kind of back-import would break one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (requirements-dev.txt)")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(root)}, timeout=300, check=False,
    )


def test_the_package_keeps_every_import_contract():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "added_import", "broken"),
    [
        ("core/schedule.py", "from sdxl_refiner.host import options", "Layers"),
        ("host/ui.py", "from sdxl_refiner.bindings.webui import conds", "Layers"),
        ("core/handoff.py", "import modules.shared", "The core imports no host"),
        ("core/checkpoint.py", "import backend.loader", "The core imports no host"),
        ("bindings/neo.py", "from sdxl_refiner.bindings.webui import unet", "independent"),
        ("bindings/patcher/routing.py", "from sdxl_refiner.bindings import forge", "patcher route"),
        ("bindings/webui/conds.py", "from sdxl_refiner.bindings.patcher import routing", "WebUI binding does not use"),
        ("host/resources.py", "from sdxl_refiner.host import sampling", "No import circle"),
    ],
)
def test_a_back_import_breaks_a_contract(tmp_path, module, added_import, broken):
    shutil.copytree(ROOT / "sdxl_refiner", tmp_path / "sdxl_refiner", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "sdxl_refiner" / module
    target.write_text(target.read_text() + f"\n{added_import}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout[-4000:]
    assert any(broken in name for name in broken_contracts(done.stdout)), done.stdout[-4000:]


def broken_contracts(report: str) -> list[str]:
    """The names of the contracts lint-imports reports broken (it wraps long names over lines)."""
    listing = " ".join(report.split("Contracts:")[0].split("---\n")[-1].split())
    return [name for name, verdict in re.findall(r"(.+?) (KEPT|BROKEN)(?= |$)", listing) if verdict == "BROKEN"]
