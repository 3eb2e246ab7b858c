"""mutmut 3.8.1's command line, with a stack-depth filter that works on this suite.

``MUTMUT_MAX_STACK_DEPTH`` sets mutmut's ``max_stack_depth`` for one run: a test then counts for
a function only when it reaches it through at most that many of the project's own frames.
mutation.sh runs the mutants first with the direct tests only (fast: a surviving mutant runs a
few tests, not every generation test), then the survivors again with every test.

With a depth set, mutmut resolves the file of every frame on the stack strictly, and frames that
have no file (importlib's frozen modules when a test loads the script, methods that dataclasses
generate) stop its stats run with ``FileNotFoundError``. Such frames are never the project's own
code, so they are resolved leniently.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys

import mutmut.configuration
import mutmut.stats
from mutmut.__main__ import cli


class _LenientPath(type(pathlib.Path())):  # type: ignore[misc]
    def resolve(self, strict: bool = False) -> pathlib.Path:
        return super().resolve(strict=False)


_load_config = mutmut.configuration._load_config


def _load_config_with_depth() -> mutmut.configuration.Config:
    config = _load_config()
    depth = os.environ.get("MUTMUT_MAX_STACK_DEPTH")
    return config if depth is None else dataclasses.replace(config, max_stack_depth=int(depth))


mutmut.stats.Path = _LenientPath  # type: ignore[misc]
mutmut.configuration._load_config = _load_config_with_depth

if __name__ == "__main__":
    sys.exit(cli())
