"""The live split line in the browser agrees with the Python switch plan, step for step."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from sdxl_refiner.core.settings import from_named

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "js" / "split_table.js"

STEPS = [1, 2, 3, 4, 5, 7, 10, 15, 20, 25, 30, 33, 40, 50, 77, 100, 150]
SHARES = [0, 0.5, 1, 2.5, 5, 10, 12.5, 15, 16.67, 20, 25, 30, 33.33, 50, 62.5, 75, 90, 99, 100]
STRENGTHS = [0.0, 0.05, 0.1, 0.3, 0.33, 0.5, 0.55, 0.7, 0.75, 0.999, 1.0]
MODES = [(False, False), (True, False), (True, True)]  # (img2img, img2img_fix_steps)
START_STEPS = [1, 2, 5, 24, 29, 30, 31, 200]


def run_node(cases: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the javascript split line cannot be checked (apt-get install nodejs)")
    done = subprocess.run(
        [node, str(HARNESS)], input=json.dumps(cases), capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def reference_steps_run(steps: int, strength: float, img2img: bool, fix_steps: bool) -> int:
    """The WebUI's img2img rule, written out: t_enc = int(min(strength, 0.999) * steps), t_enc + 1 run."""
    if not img2img or fix_steps:
        return steps
    return int(min(strength, 0.999) * steps) + 1


def reference_base_steps(steps: int, percent: float, start_step: int) -> int:
    """The step contract written out: r = floor(n*p/100 + 0.5), at least 1 when p > 0; k = n - r."""
    if start_step > 0:
        return min(start_step, steps - 1)
    exact = steps * percent / 100
    refiner = math.floor(exact) + (1 if exact - math.floor(exact) >= 0.5 else 0)
    if percent > 0:
        refiner = max(refiner, 1)
    return steps - min(refiner, steps)


def share_cases() -> list[dict]:
    return [
        {"steps": n, "percent": p, "startStep": 0, "strength": s, "isImg2img": i2i, "fixSteps": fix}
        for n, p, s, (i2i, fix) in itertools.product(STEPS, SHARES, STRENGTHS, MODES)
        if i2i or s == STRENGTHS[0]
    ]


def start_step_cases() -> list[dict]:
    return [
        {"steps": n, "percent": 20, "startStep": k, "strength": 0.75, "isImg2img": False, "fixSteps": False}
        for n, k in itertools.product(STEPS, START_STEPS)
    ]


def python_plan(case: dict, steps_run: int):
    schedule = pytest.importorskip("sdxl_refiner.core.schedule")
    named = {"checkpoint": "refiner", "enabled": True}
    if case["startStep"] > 0:
        named["start_step"] = case["startStep"]
    else:
        named["steps_percent"] = case["percent"]
    return schedule.plan_switch(from_named(named), steps_run)


@pytest.fixture(scope="module")
def table() -> list[tuple[dict, dict]]:
    cases = share_cases() + start_step_cases()
    return list(zip(cases, run_node(cases), strict=True))


def test_steps_run_follow_the_webui_img2img_rule(table: list[tuple[dict, dict]]) -> None:
    for case, shown in table:
        expected = reference_steps_run(case["steps"], case["strength"], case["isImg2img"], case["fixSteps"])
        assert shown["stepsRun"] == expected, case


def test_the_split_follows_the_rounding_rule_of_the_design(table: list[tuple[dict, dict]]) -> None:
    for case, shown in table:
        expected = reference_base_steps(shown["stepsRun"], case["percent"], case["startStep"])
        assert (shown["baseSteps"], shown["refinerSteps"]) == (expected, shown["stepsRun"] - expected), case


def test_the_split_equals_the_python_switch_plan(table: list[tuple[dict, dict]]) -> None:
    for case, shown in table:
        plan = python_plan(case, shown["stepsRun"])
        assert (shown["baseSteps"], shown["refinerSteps"]) == (plan.base_steps, plan.refiner_steps), case


def test_the_line_names_the_exact_step_ranges(table: list[tuple[dict, dict]]) -> None:
    by_key = {(c["steps"], c["percent"], c["isImg2img"], c["startStep"]): s for c, s in table}
    assert by_key[(30, 20, False, 0)]["line"] == "Base: steps 1–24 · Refiner: steps 25–30"
    assert by_key[(30, 20, False, 0)]["hint"] == ""
    assert by_key[(30, 20, False, 29)]["line"] == "Base: steps 1–29 · Refiner: step 30"
    assert by_key[(1, 20, False, 0)]["line"] == "Base: no step · Refiner: step 1"
    assert by_key[(30, 0, False, 0)]["line"] == "Refiner off at 0 %: the base runs all 30 steps"


def test_a_hint_appears_exactly_outside_the_usual_share(table: list[tuple[dict, dict]]) -> None:
    for case, shown in table:
        if case["startStep"] > 0 or case["percent"] == 0:
            continue
        share = case["percent"]
        unusual = share < 10 or share > 30 or shown["baseSteps"] == 0 or shown["refinerSteps"] == 0
        assert bool(shown["hint"]) == unusual, case
