"""Registering a host callback once, however often the script file is loaded."""

from __future__ import annotations

from collections.abc import Callable


def register_once(register: Callable[..., None], callback: Callable[..., object], name: str) -> None:
    """``register`` is one of ``script_callbacks.on_*``. The host clears every callback before it
    loads scripts again, but a script file may be imported more than once per load; a second
    registration would run the callback twice. A callback made per load (a closure) is found by
    its name, which the host keeps as the last part of the entry's name."""
    from modules import script_callbacks

    for entries in script_callbacks.callback_map.values():
        for entry in entries:
            if entry.callback is callback or str(getattr(entry, "name", "")).split("/")[-1] == name:
                return
    register(callback, name=name)
