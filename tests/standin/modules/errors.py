"""Stand-in of ``modules.errors``: reports are kept in a list so tests can see what the WebUI logged."""

from __future__ import annotations

import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message
    if exc_info:
        text += "\n" + traceback.format_exc()
    reported.append(text)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    reported.append(f"{task}: {type(e).__name__}: {e}")
