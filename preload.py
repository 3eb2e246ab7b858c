"""Command-line flags, read by the WebUI before it parses its arguments.

A flag given here wins over the matching setting in Settings → SDXL Refiner, for servers that
are configured from the command line. The WebUI runs this file before the extension's package
can be imported, so the choices are spelled out here; the tests check they match the settings'.
"""

from __future__ import annotations

import argparse

RESIDENCY_CHOICES = ("auto", "resident", "offload", "lowvram")
HIRES_PASS_CHOICES = ("webui", "first", "second", "both")


def cache_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"{value} refiners: give a number from 1 to 8")
    return value


def preload(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SDXL Refiner")
    group.add_argument(
        "--sdxl-refiner-residency",
        choices=RESIDENCY_CHOICES,
        default=None,
        help="where the refiner UNet stays between its steps: auto (decide from free VRAM), resident "
        "(on the GPU), offload (on the CPU, moved in for the refiner steps), lowvram (block by block); "
        "overrides the setting",
    )
    group.add_argument(
        "--sdxl-refiner-cache",
        type=cache_size,
        default=None,
        metavar="N",
        help="how many refiner UNets to keep loaded (1-8); overrides the setting",
    )
    group.add_argument(
        "--sdxl-refiner-hires-pass",
        choices=HIRES_PASS_CHOICES,
        default=None,
        help="which hires-fix pass gets the refiner when the panel says 'Default' (webui: the WebUI's own "
        "setting); overrides the setting",
    )
