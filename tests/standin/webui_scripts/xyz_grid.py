"""Stand-in of the WebUI 1.10.1 ``scripts/xyz_grid.py``: the axis surface extensions extend.

Kept: ``AxisOption`` (same constructor), its txt2img/img2img variants, ``axis_options`` with a
few of the built-in axes (the built-in refiner's among them), the value formatters. The grid's
per-cell application is ``run_cells``: confirm every axis' values, then for each cell a shallow
``copy(p)`` gets each axis' ``apply(pc, value, values)``, as ``Script.run`` does there.
Simplified: no UI, no value parsing from text, no image grid.
"""

from __future__ import annotations

import os
from copy import copy


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def format_value_add_label(p, opt, x):
    if type(x) == float:  # noqa: E721 - as there
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) == float:  # noqa: E721 - as there
        x = round(x, 8)
    return x


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def do_nothing(p, x, xs):
    pass


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_value),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("Refiner checkpoint", str, apply_field('refiner_checkpoint'), format_value=format_remove_path),
    AxisOption("Refiner switch at", float, apply_field('refiner_switch_at')),
]


def run_cells(p, axes, process):
    """``axes``: (AxisOption, values) pairs; returns ``process(pc)`` for every cell, first axis fastest."""
    for opt, values in axes:
        if opt.confirm:
            opt.confirm(p, values)

    cells = [[]]
    for opt, values in axes:
        cells = [[*cell, (opt, value, values)] for value in values for cell in cells]

    results = []
    for cell in cells:
        pc = copy(p)
        for opt, value, values in cell:
            opt.apply(pc, opt.type(value), values)
        results.append(process(pc))
    return results
