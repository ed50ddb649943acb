"""Soak: many sessions doing hundreds of short voice turns through `serve`; the relay's memory stays flat.

The relay runs as its own process and so does the simulator (as a user would run them), so the relay process's
resident memory is the relay's alone. Each turn is what a voice client does: 0.5 s of audio, commit, a response
with audio, and the relay's retrieve and WAV save of both items. After a warm-up (imports, allocator arenas,
the largest frames), further turns must not add memory: a relay that kept a little of every item or turn grows
in a straight line with the number of turns (a few KiB per turn), and the bound below is half of that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from tests.support.relay_fixtures import RelayProcess, running_relay_process
from tests.support.timing import seconds

SESSIONS = 12
WARMUP_ROUNDS = 3  # imports, allocator arenas, the bounded histories filling up (a loaded machine needs the third)
# Then five measured rounds of the same size: with three, one round the allocator took a new arena in and one round
# of noise (+604 and +952 KiB, -320 between them, in a CI run of a flat relay) put the median at the bound.
ROUNDS = WARMUP_ROUNDS + 5
TURNS_PER_ROUND = 30  # per session: 12 x 30 = 360 turns a round
RATE = 24000
# 0.5 s of a 440 Hz tone in 5 chunks of 100 ms.
_TONE = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / RATE))) for i in range(RATE // 2))
CHUNKS = [base64.b64encode(_TONE[i : i + RATE // 5]).decode() for i in range(0, len(_TONE), RATE // 5)]
# Allowed growth per measured turn. A relay that kept ~3 KiB per turn until its session ended grew ~1.2 MiB a
# round of 360 turns; a flat one moves by allocator noise (a few hundred KiB either way, whatever the number of
# turns).
ALLOWED_GROWTH_KIB_PER_TURN = 600 / 360


@asynccontextmanager
async def simulator_process(tmp_path: Path) -> AsyncIterator[str]:
    """`python -m relay sim` on a free port; yields its realtime URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "relay", "sim", "--port", "0", "--speed", "0", "--log-format", "json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=str(tmp_path),
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(seconds(20)):
            while True:
                line = await process.stdout.readline()
                assert line, "the simulator exited before listening"
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("msg") == "sim.listening":
                        break
        drain = asyncio.create_task(_discard(process.stdout))
        yield str(record["realtime_url"])
        drain.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


async def voice_session(relay: RelayProcess, rounds: list[asyncio.Barrier]) -> None:
    """One long session: TURNS_PER_ROUND manual voice turns (each up to its `response.done`), then a wait at the
    round's barrier while memory is read, and again, for every round."""
    async with aiohttp.ClientSession() as http, http.ws_connect(relay.ws_url, max_msg_size=0) as ws:
        first = await ws.receive_json(timeout=seconds(10))
        assert first["type"] == "session.created", first
        update = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        await ws.send_str(json.dumps({"type": "session.update", "session": update}))
        for barrier in rounds:
            for _ in range(TURNS_PER_ROUND):
                for chunk in CHUNKS:
                    await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                await ws.send_str('{"type":"input_audio_buffer.commit"}')
                await ws.send_str('{"type":"response.create"}')
                while True:
                    event = await ws.receive_json(timeout=seconds(10))
                    assert event["type"] != "error", event
                    if event["type"] == "response.done":
                        break
            await barrier.wait()  # the test reads memory
            await barrier.wait()  # and lets the next round begin


def saved_items(relay: RelayProcess) -> int:
    return sum(1 for r in relay.log_lines if r.get("msg") == "relay.audio_saved")


async def test_relay_memory_stays_flat_over_hundreds_of_voice_turns(tmp_path: Path) -> None:
    async with simulator_process(tmp_path) as sim_url:
        # The history a resume restores is bounded by its own cap (docs/resume.md, tested in tests/resume/): a
        # small cap here is reached during the warm-up, so what is measured is everything else.
        env = {
            "RELAY_MAX_SESSIONS": str(SESSIONS),
            "RELAY_RETRIEVE_TIMEOUT_SECONDS": "5",
            "RELAY_RESUME_HISTORY_MAX_BYTES": "4096",
        }
        async with running_relay_process(tmp_path, upstream=sim_url, env=env) as relay:
            rounds = [asyncio.Barrier(SESSIONS + 1) for _ in range(ROUNDS)]
            sessions = asyncio.gather(*(voice_session(relay, rounds) for _ in range(SESSIONS)))
            samples: list[int] = []
            for index, barrier in enumerate(rounds):
                await barrier.wait()
                # Every item of the round saved (its retrieve answered, its WAV written) before memory is read.
                turns_so_far = SESSIONS * TURNS_PER_ROUND * (index + 1)
                async with asyncio.timeout(seconds(20)):
                    while saved_items(relay) < 2 * turns_so_far:
                        await asyncio.sleep(0.02)
                samples.append(relay.rss_kib())
                await barrier.wait()
            await sessions
            await relay.wait_for_logs("relay.session_ended", count=SESSIONS, timeout=seconds(20))
            failed = [r for r in relay.log_lines if r.get("msg") == "relay.retrieve_failed"]
            relay.terminate()
            assert await relay.wait() == 0
    turns = SESSIONS * TURNS_PER_ROUND * ROUNDS
    assert saved_items(relay) == 2 * turns and not failed  # every user and assistant item saved, from its retrieve

    # A relay that keeps something per turn grows in every round; the allocator takes a new arena once, in one
    # round, whenever it likes (seen: +1.3 MiB in one measured round, flat before and after). The median round
    # tells the two apart.
    per_round = [samples[i] - samples[i - 1] for i in range(WARMUP_ROUNDS, ROUNDS)]
    median = sorted(per_round)[len(per_round) // 2]
    bound = ALLOWED_GROWTH_KIB_PER_TURN * SESSIONS * TURNS_PER_ROUND
    print(f"relay RSS after each round (KiB): {samples}; growth in each measured round: {per_round} KiB")
    assert median < bound, f"RSS grew by {per_round} KiB in the measured rounds of {turns // ROUNDS} turns: {samples}"
