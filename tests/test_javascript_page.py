"""The browser side of the split line reads the panel's real element ids and the WebUI's own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sdxl_refiner.core.samplers import NOISE_SAMPLER_LABELS, REFUSED_SAMPLER_LABELS
from sdxl_refiner.host.options import UNLOAD_ROUTE
from sdxl_refiner.host.ui import ELEM_PREFIX, elem_id

HARNESS = Path(__file__).resolve().parent / "js" / "page_harness.js"


def show(values: dict[str, object], opts: dict[str, object]) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the javascript page cannot be checked (apt-get install nodejs)")
    page = {"values": values, "opts": opts, "lines": [elem_id(tab, "split") for tab in ("txt2img", "img2img")]}
    done = subprocess.run([node, str(HARNESS)], input=json.dumps(page), capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(done.stdout)


def tab_values(
    tab: str, steps: int, percent: float, start_step: int = 0, sampler: str = "Euler", enabled: bool = True,
    noise: float = 1.0,
) -> dict[str, object]:
    return {
        f"{ELEM_PREFIX}_{tab}-checkbox": enabled,
        f"{tab}_steps": steps,
        f"{tab}_sampling": sampler,
        elem_id(tab, "steps_percent"): percent,
        elem_id(tab, "start_step"): start_step,
        elem_id(tab, "noise_multiplier"): noise,
    }


def test_each_tab_shows_its_own_split_from_its_own_sliders() -> None:
    values = {**tab_values("txt2img", 30, 20), **tab_values("img2img", 40, 25), "img2img_denoising_strength": 0.5}
    shown = show(values, {"img2img_fix_steps": False})["shown"]
    assert shown[elem_id("txt2img", "split")] == {"text": "Base: steps 1–24 · Refiner: steps 25–30", "hint": False}
    assert shown[elem_id("img2img", "split")] == {"text": "Base: steps 1–16 · Refiner: steps 17–21", "hint": False}


def test_with_the_toggle_off_the_line_says_the_refiner_is_off_instead_of_a_split() -> None:
    values = {**tab_values("txt2img", 30, 20, enabled=False), **tab_values("img2img", 40, 25)}
    shown = show(values, {"img2img_fix_steps": True})["shown"]
    assert shown[elem_id("txt2img", "split")] == {"text": "SDXL Refiner is off: the base runs all 30 steps", "hint": False}
    assert shown[elem_id("img2img", "split")]["text"] == "Base: steps 1–30 · Refiner: steps 31–40"


def test_img2img_fix_steps_makes_the_line_follow_the_steps_slider() -> None:
    values = {**tab_values("txt2img", 30, 20), **tab_values("img2img", 40, 25), "img2img_denoising_strength": 0.5}
    shown = show(values, {"img2img_fix_steps": True})["shown"]
    assert shown[elem_id("img2img", "split")]["text"] == "Base: steps 1–30 · Refiner: steps 31–40"


def test_start_step_and_sigma_samplers_are_reflected_with_a_hint() -> None:
    values = {**tab_values("txt2img", 30, 20, start_step=27, sampler="DPM adaptive"), **tab_values("img2img", 30, 20)}
    shown = show(values, {})["shown"][elem_id("txt2img", "split")]
    assert shown["text"].startswith("Base: steps 1–27 · Refiner: steps 28–30 — ")
    assert "DPM adaptive has no step list" in shown["text"]
    assert shown["hint"] is True


def test_the_settings_link_posts_to_the_unload_route() -> None:
    requests = show({**tab_values("txt2img", 30, 20), **tab_values("img2img", 30, 20)}, {})["requests"]
    assert requests == [{"url": "." + UNLOAD_ROUTE, "method": "POST"}]


def test_samplers_the_binding_refuses_are_named_before_generating() -> None:
    values = {**tab_values("txt2img", 30, 20, sampler="UniPC"), **tab_values("img2img", 30, 20)}
    shown = show(values, {})["shown"][elem_id("txt2img", "split")]
    assert shown["text"] == (
        "Base: steps 1–24 · Refiner: steps 25–30 — UniPC cannot hand over at a step: "
        "pick Euler, Euler a, DPM++ 2M, DPM++ SDE, Heun or LMS."
    )


def test_the_line_names_exactly_the_samplers_the_binding_refuses() -> None:
    source = (Path(__file__).resolve().parents[1] / "javascript" / "sdxl_refiner.js").read_text(encoding="utf-8")
    listed = re.search(r"var REFUSED_SAMPLERS = (\[.*?\]);", source)
    assert listed is not None, "javascript/sdxl_refiner.js no longer declares REFUSED_SAMPLERS"
    assert tuple(json.loads(listed.group(1))) == REFUSED_SAMPLER_LABELS


def test_the_line_names_exactly_the_samplers_whose_noise_the_refiner_noise_scales() -> None:
    source = (Path(__file__).resolve().parents[1] / "javascript" / "sdxl_refiner.js").read_text(encoding="utf-8")
    listed = re.search(r"var NOISE_SAMPLERS = (\[.*?\]);", source, re.S)
    assert listed is not None, "javascript/sdxl_refiner.js no longer declares NOISE_SAMPLERS"
    assert tuple(json.loads(listed.group(1))) == NOISE_SAMPLER_LABELS


@pytest.mark.parametrize(("sampler", "noise", "said"), [
    ("Euler", 0.5, True), ("DPM++ 2M", 1.2, True), ("Euler", 1.0, False), ("Euler a", 0.5, False),
    ("DPM++ 2M SDE", 0.0, False),
])
def test_a_refiner_noise_that_cannot_act_is_named_under_the_slider(sampler, noise, said) -> None:
    values = {**tab_values("txt2img", 30, 20, sampler=sampler, noise=noise), **tab_values("img2img", 30, 20)}
    shown = show(values, {})["shown"][elem_id("txt2img", "split")]
    hint = f" — Refiner noise has no effect with {sampler}: it adds no ancestral or SDE noise."
    assert shown == ({"text": "Base: steps 1–24 · Refiner: steps 25–30" + (hint if said else ""), "hint": said})


def test_with_the_refiner_off_the_noise_is_not_mentioned() -> None:
    values = {**tab_values("txt2img", 30, 0, noise=0.5), **tab_values("img2img", 30, 20, enabled=False, noise=0.5)}
    shown = show(values, {})["shown"]
    assert shown[elem_id("txt2img", "split")] == {"text": "Refiner off at 0 %: the base runs all 30 steps", "hint": False}
    assert shown[elem_id("img2img", "split")] == {"text": "SDXL Refiner is off: the base runs all 23 steps", "hint": False}
