"""`python -m bench.recorder [--mode realtime|flood] [--sessions N] [--seconds S] [--runs R]`: the session
recording alone, CPU us per round trip (one append and one assistant delta), for judging a change to
`relay.recording` without the sockets, the session and the VM's noise around them (docs/performance.md, "The
thirteenth round").

`realtime`: N recorders (default 100), each fed one append and one delta of 20 ms of 24 kHz PCM every 20 ms of a
fake clock, each in its own flush as the bridge hands them over, committed every 0.5 s. `flood`: N recorders
(default 10) fed bursts of 8 appends and 8 deltas at 100 times real time, so the lead limit is reached at once
and the flood gate drops nearly everything. Commits render and write for real (to a temporary directory, on this
thread). Prints one JSON document with each run's figure and their minimum.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from relay.core.formats import DEFAULT_FORMAT
from relay.core.outbox import LogEntry
from relay.recording import recorder as recorder_module
from relay.recording.clock import write_blocks, writer_executor
from relay.recording.recorder import RecordingOptions, SessionRecorder

COMMIT_EVERY_S = 0.5
TICK_S = 0.02  # one 20 ms chunk each way
AUDIO = base64.b64encode(os.urandom(960)).decode()  # 20 ms of 24 kHz PCM16


def _append() -> LogEntry:
    event = {"type": "input_audio_buffer.append", "audio": AUDIO}
    return LogEntry("client", "input_audio_buffer.append", event, bytes=len(AUDIO) + 50, audio_format=DEFAULT_FORMAT)


def _delta(item: str) -> LogEntry:
    event = {"type": "response.output_audio.delta", "item_id": item, "delta": AUDIO, "response_id": "resp_1"}
    return LogEntry("server", "response.output_audio.delta", event, bytes=len(AUDIO) + 120, audio_format=DEFAULT_FORMAT)


def run(mode: str, sessions: int, seconds: float) -> float:
    """One run: CPU us per round trip of `sessions` recorders over `seconds` of fake time."""
    return asyncio.run(_run(mode, sessions, seconds))


async def _run(mode: str, sessions: int, seconds: float) -> float:
    clock = [1000.0]
    # The recorder reads the time through its module's `time`: a fake clock there drives every recorder.
    with mock.patch.object(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0])):
        with tempfile.TemporaryDirectory() as tmp:
            recorders = [
                SessionRecorder(Path(tmp) / f"{n}.wav", "/", RecordingOptions(), started_mono=clock[0], report=lambda t, e: None)
                for n in range(sessions)
            ]
            for recorder in recorders:
                recorder.start()  # opens its file on the writer thread; the clock's own ticks never run (no await)
            await asyncio.wrap_future(writer_executor().submit(lambda: None))  # the files are open (one thread, FIFO)
            if mode == "realtime":
                flushes = [[[_append()], [_delta(f"item_{k // 500}")]] for k in range(int(seconds / TICK_S))]
                step, round_trips = TICK_S, 1
            else:
                burst = [entry for _ in range(8) for entry in (_append(), _delta("item_1"))]
                flushes = [[burst]] * int(seconds / (8 * TICK_S / 100))
                step, round_trips = 8 * TICK_S / 100, 8
            next_commit = clock[0] + COMMIT_EVERY_S
            started = time.process_time()
            for tick in flushes:
                clock[0] += step
                for recorder in recorders:
                    for flush in tick:
                        recorder.observe(flush)
                if clock[0] >= next_commit:  # the commits, and the writes on this thread: all of it is counted
                    next_commit += COMMIT_EVERY_S
                    for recorder in recorders:
                        blocks: list[Any] = []
                        recorder.commit_due(blocks)
                        write_blocks(blocks)
            spent = time.process_time() - started
            for recorder in recorders:
                await recorder.finish()
            return spent / (len(flushes) * sessions * round_trips) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("realtime", "flood"), default="realtime")
    parser.add_argument("--sessions", type=int, default=None, help="recorders (default: 100 realtime, 10 flood)")
    parser.add_argument("--seconds", type=float, default=10.0, help="fake seconds per run (default: 10)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    sessions = args.sessions if args.sessions is not None else (100 if args.mode == "realtime" else 10)
    if sessions < 1 or args.runs < 1 or args.seconds <= 0:
        parser.error("--sessions, --runs and --seconds must be positive")
    figures = [round(run(args.mode, sessions, args.seconds), 3) for _ in range(args.runs)]
    json.dump({"mode": args.mode, "sessions": sessions, "us_per_round_trip": figures, "min": min(figures)}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
