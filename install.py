"""Run by the WebUI when it installs or starts the extension: checks, and installs nothing.

Everything the extension needs (torch, safetensors, k-diffusion) is what the WebUI itself runs
on; installing our own copies would fight the WebUI's pinned versions. So this only says clearly
what is missing, if anything.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

EXTENSION_DIR = Path(__file__).resolve().parent


def webui_roots() -> list[Path]:
    """Where the WebUI may live: the launcher puts its root first on PYTHONPATH."""
    first_on_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    roots = [Path(first_on_path)] if first_on_path else []
    return [*roots, EXTENSION_DIR.parent.parent, Path.cwd()]


def k_diffusion_available(roots: list[Path]) -> bool:
    """The WebUI clones k-diffusion into repositories/ and puts it on sys.path only at start."""
    if importlib.util.find_spec("k_diffusion") is not None:
        return True
    return any((root / "repositories" / "k-diffusion" / "k_diffusion" / "sampling.py").is_file() for root in roots)


def missing_requirements(roots: list[Path]) -> list[str]:
    missing = [name for name in ("torch", "safetensors") if importlib.util.find_spec(name) is None]
    if not k_diffusion_available(roots):
        missing.append("k_diffusion")
    return missing


def main() -> int:
    missing = missing_requirements(webui_roots())
    if missing:
        print(
            f"[SDXL Refiner] missing: {', '.join(missing)}. These come with the Stable Diffusion WebUI "
            "(1.6 or newer; 1.10.x recommended). Start the WebUI once so that it installs them; this "
            "extension installs nothing itself.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
