"""`bench.calls` counts the Python calls per round trip inside a running relay: a short real run gives a positive
count, split by module, with the relay's own modules in it; bad flags are refused; a profile in which no frame
crossed is an error, not a division by zero. No figure is asserted (they are the bench's)."""

from __future__ import annotations

import cProfile
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.calls import ANCHORS, calls_per_round_trip

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_a_short_run_counts_calls_per_round_trip_by_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.calls", "--sessions", "2", "--seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=80, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["target"] == "relay" and report["round_trips_profiled"] > 0
    assert report["calls_per_round_trip"] > 0
    assert "core/frames.py" in report["by_module"] and "eventlog/records.py" in report["by_module"]


@pytest.mark.parametrize("flags", [["--sessions", "0"], ["--seconds", "-1"], ["--mode", "burst"], ["--variant", "nope"]])
def test_bad_flags_exit_2_with_a_message(flags: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.calls", *flags], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "error" in done.stderr and "Traceback" not in done.stderr


def test_a_window_in_which_no_frame_crossed_is_an_error(tmp_path: Path) -> None:
    profile = cProfile.Profile()
    profile.enable()
    sum(range(10))
    profile.disable()
    profile.dump_stats(str(tmp_path / "p.prof"))
    with pytest.raises(RuntimeError, match="no round trip"):
        calls_per_round_trip(tmp_path / "p.prof", ANCHORS["relay"])
