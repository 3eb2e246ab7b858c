"""Registering a WebUI callback once, however often the script file is loaded."""

from __future__ import annotations

from collections.abc import Callable


def register_once(register: Callable[..., None], callback: Callable[..., object], name: str) -> None:
    """``register`` is one of ``script_callbacks.on_*``. The WebUI clears every callback before it
    loads scripts again, but a script file may be imported more than once per load; a second
    registration would run the callback twice."""
    from modules import script_callbacks

    registered = {entry.callback for entries in script_callbacks.callback_map.values() for entry in entries}
    if callback not in registered:
        register(callback, name=name)
