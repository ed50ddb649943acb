"""`python -m bench.recorder` cannot rot: a tiny run of each mode prints one JSON document with a figure per run
(no timing is asserted), and bad arguments are refused with the usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("mode", ["realtime", "flood"])
def test_the_recorder_benchmark_prints_one_figure_per_run(mode: str) -> None:
    done = run_module("bench.recorder", "--mode", mode, "--sessions", "2", "--seconds", "1", "--runs", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == mode and result["sessions"] == 2
    assert len(result["us_per_round_trip"]) == 2 and result["min"] == min(result["us_per_round_trip"]) > 0


@pytest.mark.parametrize("args", [["--mode", "warp"], ["--sessions", "0"], ["--runs", "-1"], ["--seconds", "x"]])
def test_the_recorder_benchmark_refuses_bad_arguments(args: list[str]) -> None:
    done = run_module("bench.recorder", *args, timeout=30)
    assert done.returncode == 2
    assert "usage:" in done.stderr
