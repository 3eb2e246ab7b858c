"""The benchmarks still run: each at its smallest size, in a process of its own (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_handoff_benchmark_runs_and_prints_its_ratios():
    out = run("bench_handoff.py", "--pairs", "1", "--steps", "4")
    assert "median ratio wall" in out and "routing alone" in out


@pytest.mark.slow
def test_the_checkpoint_benchmark_runs_and_prints_its_ratios(tmp_path):
    out = run("bench_checkpoint.py", "--unet-gb", "0.01", "--repeat", "1", "--dir", str(tmp_path))
    assert "bytes read / UNet bytes" in out and "peak RSS growth / UNet bytes" in out


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_case_at_a_reduced_size_on_the_cpu(tmp_path):
    out = run(
        "bench_gpu.py", "--small", "--device", "cpu", "--size", "64", "--steps", "10", "--rounds", "1",
        "--samplers", "euler", "--dir", str(tmp_path),
    )
    for case in ("base copy", "resident", "offload", "lowvram"):
        assert re.search(rf"{case} [0-9.]+ s \([0-9.]+\)", out), case
        assert re.search(rf"{case} / base only, all samplers: [0-9.]+", out), case
    for case in ("base copy", "resident"):
        assert re.search(rf"  {case}: -?[0-9.]+ ms, goal <= 1 ms", out), case
    assert re.search(r"step: base [0-9.]+ ms, refiner [0-9.]+ ms", out)
    assert re.search(r"offload: -?[0-9.]+ ms left at the switch; the copy alone takes [0-9.]+ ms", out)
    assert re.search(r"load speed / raw [0-9.]+", out)
    assert "n/a: no CUDA device" in out
    assert not list(tmp_path.iterdir()), "the refiner file is deleted"
