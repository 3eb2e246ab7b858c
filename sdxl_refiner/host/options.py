"""The settings section "SDXL Refiner", the command-line flags that override it, and the unload action.

The binding reads the effective values through the functions here, so that a flag given on the
command line (preload.py) always wins over the settings page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import gradio as gr

from sdxl_refiner.core.residency import RESIDENCY_POLICIES
from sdxl_refiner.core.settings import Settings
from sdxl_refiner.host.callbacks import register_once

SECTION = ("sdxl_refiner", "SDXL Refiner")
CATEGORY = "sd"
UNLOAD_ROUTE = "/sdxl-refiner/v1/unload"

OPTION_RESIDENCY = "sdxl_refiner_residency"
OPTION_CACHE_SIZE = "sdxl_refiner_cache_size"
OPTION_HIRES_PASS = "sdxl_refiner_hires_pass"
OPTION_IMPORT_BUILTIN = "sdxl_refiner_import_builtin_infotext"

HIRES_PASS_CHOICES = ("webui", "first", "second", "both")
WEBUI_HIRES_PASS = {"first pass": "first", "second pass": "second", "both passes": "both"}

ConcretePass = Literal["first", "second", "both"]


def add_options() -> None:
    """on_ui_settings: the section's options, with what each one is for."""
    from modules import shared

    def option(key: str, info: object) -> None:
        shared.opts.add_option(key, info)

    option(OPTION_RESIDENCY, shared.OptionInfo(
        "auto", "Where the refiner UNet stays", gr.Radio, {"choices": list(RESIDENCY_POLICIES)},
        section=SECTION, category_id=CATEGORY,
    ).info(
        "auto: decide from free VRAM; resident: on the GPU beside the base (fastest, about 4.5 GB more); "
        "offload: on the CPU, moved in for the refiner steps; lowvram: block by block, like --lowvram"
    ))
    option(OPTION_CACHE_SIZE, shared.OptionInfo(
        1, "Refiner UNets to keep loaded", gr.Slider, {"minimum": 1, "maximum": 8, "step": 1},
        section=SECTION, category_id=CATEGORY,
    ).info("more than 1 only helps when switching between refiners, and costs memory for each").js(
        "Unload refiner now", "sdxlRefinerUnload"
    ))
    option(OPTION_HIRES_PASS, shared.OptionInfo(
        "webui", "Hires fix: which pass gets the refiner when the panel says Default", gr.Radio,
        {"choices": list(HIRES_PASS_CHOICES)}, section=SECTION, category_id=CATEGORY,
    ).info("webui: follow the host's own 'Hires fix: which pass to enable refiner for' (the second pass in a "
           "host without that setting, such as Forge Neo)"))
    option(OPTION_IMPORT_BUILTIN, shared.OptionInfo(
        False, "Pasting infotext of the built-in refiner fills this panel too", gr.Checkbox,
        section=SECTION, category_id=CATEGORY,
    ).info("keys 'Refiner' and 'Refiner switch at'; turn the built-in off yourself if you want only this one"))


def _flag(name: str) -> object:
    from modules import shared

    return getattr(shared.cmd_opts, name, None)


def _opt(key: str, default: object) -> object:
    from modules import shared

    return getattr(shared.opts, key, default) if key in shared.opts.data_labels else default


def residency_policy() -> str:
    """The policy for residency.choose_residency: the flag, else the setting, else "auto"."""
    value = _flag("sdxl_refiner_residency") or _opt(OPTION_RESIDENCY, "auto")
    return value if value in RESIDENCY_POLICIES else "auto"


def cache_capacity() -> int:
    """How many refiner UNets the process-wide cache keeps: the flag, else the setting, else 1."""
    value = _flag("sdxl_refiner_cache") or _opt(OPTION_CACHE_SIZE, 1)
    try:
        return max(1, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1


def effective_hires_pass(settings: Settings) -> ConcretePass:
    """Which hires-fix pass gets the refiner: the panel, else our setting, else the WebUI's setting."""
    if settings.hires_pass != "default":
        return settings.hires_pass
    ours = _flag("sdxl_refiner_hires_pass") or _opt(OPTION_HIRES_PASS, "webui")
    if ours in ("first", "second", "both"):
        return ours  # type: ignore[return-value]
    return WEBUI_HIRES_PASS.get(str(_opt("hires_fix_refiner_pass", "second pass")), "second")  # type: ignore[return-value]


def import_builtin_infotext() -> bool:
    return bool(_opt(OPTION_IMPORT_BUILTIN, False))


def builtin_switches_by_steps() -> bool:
    """Whether the host's built-in refiner switches at a share of the steps (its "Refiner switch at"
    is then a fraction): Forge Neo's switches at a sigma unless its ``refiner_use_steps`` is on."""
    return bool(_opt("refiner_use_steps", True))


# The binding's unload: frees the cached refiner UNets wherever the host holds them, and names their files.
Unload = Callable[[], Sequence[str]]


def unload_action(unload: Unload) -> Callable[[], dict[str, object]]:
    """The settings page's "Unload refiner now" action, also an API route for servers."""

    def unload_refiner_now() -> dict[str, object]:
        return {"unloaded": True, "refiners": list(unload())}

    return unload_refiner_now


def api_credentials() -> dict[str, str]:
    """The users of ``--api-auth user:password[,user:password]``, parsed as the WebUI's Api does."""
    from modules import shared

    spec = getattr(shared.cmd_opts, "api_auth", None)
    if not spec:
        return {}
    return dict(entry.split(":", 1) for entry in spec.split(","))


def api_auth_dependencies() -> list:
    """The same HTTP Basic check as the WebUI's own routes under ``--api-auth``: without it a server
    that protects its API would leave this route open to anyone who reaches it."""
    credentials = api_credentials()
    if not credentials:
        return []
    from secrets import compare_digest

    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())) -> None:  # noqa: B008 - FastAPI's idiom
        expected = credentials.get(given.username)
        if expected is None or not compare_digest(given.password, expected):
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})

    return [Depends(check)]


def unload_route(unload: Unload) -> Callable[[object, object], None]:
    """on_app_started: POST /sdxl-refiner/v1/unload frees the cached refiner UNets."""

    def add_unload_route(_demo: object, app: object) -> None:
        app.add_api_route(  # type: ignore[attr-defined]
            UNLOAD_ROUTE, unload_action(unload), methods=["POST"], dependencies=api_auth_dependencies()
        )

    return add_unload_route


def register_callbacks(unload: Unload) -> None:
    """Once per script load; the WebUI clears all callbacks before it loads scripts again."""
    from modules import script_callbacks

    register_once(script_callbacks.on_ui_settings, add_options, "sdxl_refiner_options")
    register_once(script_callbacks.on_app_started, unload_route(unload), "sdxl_refiner_unload_route")
