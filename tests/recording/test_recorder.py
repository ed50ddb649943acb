"""The recorder and its file on their own: a header valid after every append, right-channel erasing, write
failures contained, and whatever a client or upstream puts in an audio frame never breaking the recording."""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.core.formats import AudioFormat
from relay.core.outbox import LogEntry
from relay.recording import RecordingOptions, SessionRecorder
from relay.recording import clock as clock_module
from relay.recording import lineup as lineup_module
from relay.recording.clock import COMMIT_EVERY_S, COMMIT_PHASES, HAND_OVER_TICKS
from relay.recording.wavfile import GrowingWav
from tests.support.recording_helpers import read_stereo


def test_the_header_is_valid_after_every_append(tmp_path: Path) -> None:
    wav = GrowingWav(tmp_path / "r" / "recording.wav", 16000)
    wav.open()
    for n in range(1, 6):
        wav.append(np.full((100 * n, 2), n, dtype="<i2").tobytes())
        with wave.open(str(wav.path), "rb") as w:  # what a crash right now would leave
            assert w.getnframes() == 100 * sum(range(1, n + 1))
            assert (w.getnchannels(), w.getframerate()) == (2, 16000)
    wav.close()
    assert oct(wav.path.stat().st_mode & 0o777) == "0o640"
    assert oct(wav.path.parent.stat().st_mode & 0o777) == "0o750"


def test_erasing_silences_only_the_right_channel_of_written_frames(tmp_path: Path) -> None:
    wav = GrowingWav(tmp_path / "recording.wav", 8000)
    wav.open()
    wav.append(np.full((1000, 2), 7, dtype="<i2").tobytes())
    wav.erase_right(400, 5000)  # past the end: only what exists
    wav.close()
    frames, _ = read_stereo(wav.path)
    assert len(frames) == 1000 and (frames[:, 0] == 7).all()
    assert (frames[:400, 1] == 7).all() and not frames[400:, 1].any()


def test_a_device_that_refuses_writes_fails_the_file_not_the_caller() -> None:
    wav = GrowingWav(Path("/dev/full"), 8000)
    wav.open()
    wav.append(b"\0" * 4000)
    assert wav.error is not None and "No space left" in wav.error
    assert wav.frames == 0
    wav.close()


async def _record(path: Path, entries: list[LogEntry], options: RecordingOptions) -> tuple[dict[str, Any], list[Any]]:
    reports: list[Any] = []
    recorder = SessionRecorder(
        path, "/url", options, started_mono=time.monotonic(), report=lambda t, e: reports.append((t, e))
    )
    recorder.start()
    for entry in entries:
        recorder.observe([entry])
    return await recorder.finish(), reports


async def test_sessions_started_together_render_in_different_ticks_and_reach_the_writer_in_few_jobs(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Recordings started in the same moment must not all render in one loop turn every interval (a burst that every
    waiting frame pays in latency): each renders in its own tick. What several ticks rendered reaches the writer
    thread as one job (each job wakes that thread). Every recording is still committed within the interval."""
    jobs: list[list[Any]] = []
    write_blocks = clock_module.write_blocks

    def spy(blocks: list[Any]) -> None:
        jobs.append([wav.path.name for wav, _ in blocks])
        write_blocks(blocks)

    monkeypatch.setattr(clock_module, "write_blocks", spy)
    options = RecordingOptions(rate=8000)
    recorders = [
        SessionRecorder(tmp_path / f"{i}.wav", "/url", options, started_mono=time.monotonic(), report=lambda t, e: None)
        for i in range(COMMIT_PHASES)
    ]
    renders: list[tuple[float, str]] = []
    for recorder in recorders:
        commit_due = recorder.commit_due

        def timed(blocks: list[Any], commit_due: Any = commit_due, name: str = recorder.path.name) -> None:
            renders.append((time.monotonic(), name))
            commit_due(blocks)

        monkeypatch.setattr(recorder, "commit_due", timed)
        recorder.start()
    # A recording renders what is COMMIT_LAG_MS behind the clock: a turn that comes before that renders nothing, so
    # every recording has written something after two intervals (and a margin for a busy machine).
    await asyncio.sleep(COMMIT_EVERY_S * 2 + 0.3)
    written = list(jobs)
    for recorder in recorders:
        await recorder.finish()
    # Ticks are COMMIT_EVERY_S / COMMIT_PHASES (20 ms) apart: renders closer than 5 ms share a tick.
    ticks: list[list[str]] = []
    last = -1.0
    for at, name in renders:
        if at - last > 0.005:
            ticks.append([])
        ticks[-1].append(name)
        last = at
    assert all(len(tick) == 1 for tick in ticks), ticks  # one recording per tick: as many started together as slots
    assert {name for tick in ticks for name in tick} == {f"{i}.wav" for i in range(COMMIT_PHASES)}
    assert written and all(len(job) <= HAND_OVER_TICKS for job in written), written
    assert len(written) < len(ticks)  # a job holds what several ticks rendered
    assert {name for job in written for name in job} == {f"{i}.wav" for i in range(COMMIT_PHASES)}


async def test_a_recording_whose_commit_fails_stops_alone_and_says_why(tmp_path: Path, monkeypatch: Any) -> None:
    reports: list[Any] = []
    options = RecordingOptions(rate=8000)
    broken = SessionRecorder(tmp_path / "broken.wav", "/url", options, started_mono=time.monotonic(), report=lambda t, e: reports.append((t, e)))
    healthy = SessionRecorder(tmp_path / "healthy.wav", "/url", options, started_mono=time.monotonic(), report=lambda t, e: None)

    def bug(blocks: list[Any]) -> None:
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr(broken, "commit_due", bug)
    broken.start()
    healthy.start()
    await asyncio.sleep(COMMIT_EVERY_S * 1.6)
    saved = await healthy.finish()
    await broken.finish()
    assert [(t, e["reason"], e["error"]) for t, e in reports] == [
        ("relay.recording_stopped", "internal_error", "RuntimeError: a bug in rendering")
    ]
    assert saved["stopped"] is None and saved["duration_ms"] > 0



def test_a_bug_while_placing_a_floods_waiting_frames_stops_the_recording_not_the_forwarding(tmp_path: Path, monkeypatch: Any) -> None:
    """Frames wait to be placed; a flood places them early, inside `observe`, which the bridge calls while it
    forwards: a relay bug there must stop the recording (reported once), never raise into the session."""
    reports: list[Any] = []
    recorder = SessionRecorder(tmp_path / "r.wav", "/url", RecordingOptions(rate=8000), started_mono=time.monotonic(), report=lambda t, e: reports.append((t, e)))

    def bug(*args: Any) -> None:
        raise RuntimeError("a bug in placing")

    monkeypatch.setattr(recorder, "_add", bug)
    chunk = base64.b64encode(b"\x10\x00" * 160).decode()
    for _ in range(200):
        recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=AudioFormat("audio/pcm", 8000))])
    assert [(t, e["reason"], e["error"]) for t, e in reports] == [
        ("relay.recording_stopped", "internal_error", "RuntimeError: a bug in placing")
    ]

def test_a_bug_while_placing_a_flood_as_it_crosses_stops_the_recording_not_the_forwarding(tmp_path: Path, monkeypatch: Any) -> None:
    """A flood is placed as it crosses, inside `observe`, with nothing waiting: a relay bug there (here in the
    lane's check) must stop the recording, reported once, and never raise into the session's forwarding."""
    reports: list[Any] = []
    recorder = SessionRecorder(tmp_path / "r.wav", "/url", RecordingOptions(rate=8000), started_mono=time.monotonic(), report=lambda t, e: reports.append((t, e)))
    chunk = base64.b64encode(b"\x10\x00" * 160).decode()
    fmt = AudioFormat("audio/pcm", 8000)
    recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
    recorder._place_waiting_safely()  # what waited is placed: the next chunk takes the flood path

    def bug(*args: Any) -> None:
        raise RuntimeError("a bug in the lane")

    monkeypatch.setattr(recorder._user, "ahead", bug)
    for _ in range(10):
        recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
    assert [(t, e["reason"], e["error"]) for t, e in reports] == [
        ("relay.recording_stopped", "internal_error", "RuntimeError: a bug in the lane")
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
audio_like = st.one_of(
    json_values,
    st.binary(max_size=301).map(lambda b: base64.b64encode(b).decode()),
    st.just("not base64!!"),
)
formats = st.builds(AudioFormat, st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma", "weird"]), st.integers(1, 400000))
entries = st.builds(
    LogEntry,
    dir=st.sampled_from(["client", "server", "relay"]),
    type=st.sampled_from(
        ["input_audio_buffer.append", "response.output_audio.delta", "response.audio.delta", "conversation.item.truncate", None]
    ),
    event=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"audio": audio_like, "delta": audio_like, "item_id": json_values | st.sampled_from(["a", "b"]), "audio_end_ms": json_values}
        ),
    ),
    audio_format=st.none() | formats,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, max_size=25))
def test_garbage_in_audio_frames_never_breaks_the_recording(batch: list[LogEntry]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.wav"
        saved, reports = asyncio.run(_record(path, batch, RecordingOptions(rate=8000, max_lead_seconds=1.0)))
        frames, rate = read_stereo(path)
        assert rate == 8000 and saved["bytes"] == path.stat().st_size == 44 + len(frames) * 4
        assert reports == []


async def test_a_flood_is_capped_at_the_lead_and_counted_as_dropped(tmp_path: Path) -> None:
    chunk = base64.b64encode(b"\x10\x00" * 8000).decode()  # 1 s at 8 kHz
    flood = [
        LogEntry("client", "input_audio_buffer.append", {"type": "input_audio_buffer.append", "audio": chunk}, audio_format=AudioFormat("audio/pcm", 8000))
        for _ in range(10)
    ]
    saved, _ = await _record(tmp_path / "recording.wav", flood, RecordingOptions(rate=8000, max_lead_seconds=2.0))
    assert 1900 <= saved["duration_ms"] <= 2100  # 2 s of the 10 s sent were within the lead
    assert 7900 <= saved["dropped_ms"] <= 8100


def test_a_flood_at_the_lead_limit_keeps_the_audio_it_holds_not_every_chunk_it_saw(tmp_path: Path, monkeypatch: Any) -> None:
    """A client (or upstream) far faster than real time: at the lead limit each chunk keeps only the few frames
    the clock moved on since the previous one. Those frames are what waits in memory; the rest of the chunk, and
    the bookkeeping of one queued piece per chunk, must not (a chunk kept whole for one frame of it is a memory
    growth with every chunk, and a commit that loops over thousands of pieces)."""
    import tracemalloc
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    recorder = SessionRecorder(
        tmp_path / "recording.wav", "/url", RecordingOptions(rate=8000, max_lead_seconds=1.0), started_mono=100.0, report=lambda t, e: None
    )
    fmt = AudioFormat("audio/pcm", 8000)
    user = base64.b64encode(b"\x10\x00" * 800).decode()  # 100 ms, 1600 bytes
    assistant = base64.b64encode(b"\x20\x00" * 800).decode()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):  # 200 s of audio each way within 2 s of clock (the timer never commits here)
            recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": user}, audio_format=fmt)])
            recorder.observe([LogEntry("server", "response.output_audio.delta", {"delta": assistant, "item_id": "a"}, audio_format=fmt)])
            clock[0] += 0.001
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Waiting: [0, clock + lead) = 3 s per lane, 48 kB of samples at 8 kHz. Keeping every chunk whole held ~7 MB.
    assert held < 200_000, held


def test_a_flood_past_the_lead_limit_is_dropped_without_decoding_it(tmp_path: Path, monkeypatch: Any) -> None:
    """Audio arriving far faster than real time costs the recorder next to nothing: a chunk placed nowhere is
    never decoded, and at the lead limit one whole chunk is recorded each time the clock has made room for one."""
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    decoded: list[str] = []
    real_b64 = lineup_module.b64_audio
    monkeypatch.setattr(lineup_module, "b64_audio", lambda text: decoded.append(text) or real_b64(text))
    recorder = SessionRecorder(
        tmp_path / "recording.wav", "/url", RecordingOptions(rate=8000, max_lead_seconds=1.0), started_mono=100.0, report=lambda t, e: None
    )
    fmt = AudioFormat("audio/pcm", 16000)  # resampled: the skipped chunks must not confuse the stream's counts
    chunk = base64.b64encode(b"\x10\x00" * 1600).decode()  # 100 ms
    for _ in range(2000):  # 200 s of audio each way within 2 s of clock
        recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
        recorder.observe([LogEntry("server", "response.output_audio.delta", {"delta": chunk, "item_id": "a"}, audio_format=fmt)])
        clock[0] += 0.001
    recorder._commit(recorder._now(), [])  # what is kept is decoded by the time it is written
    # [0, clock + lead) = 3 s per lane: 30 chunks of 100 ms each way, give or take the edges.
    decoded_chunks = sum(len(text) for text in decoded) / len(chunk)
    assert 50 <= decoded_chunks <= 64, decoded_chunks


async def test_the_file_stops_at_recording_max_seconds_and_says_so(tmp_path: Path) -> None:
    chunk = base64.b64encode(b"\x10\x00" * 8000).decode()
    flood = [
        LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=AudioFormat("audio/pcm", 8000))
        for _ in range(3)
    ]
    saved, reports = await _record(tmp_path / "recording.wav", flood, RecordingOptions(rate=8000, max_seconds=1.5))
    assert saved["duration_ms"] == 1500 and saved["stopped"] == "max_seconds" and saved["dropped_ms"] == 0
    assert [t for t, _ in reports] == ["relay.recording_stopped"]
    assert reports[0][1]["reason"] == "max_seconds"


async def test_a_file_that_could_not_be_created_is_saved_as_nothing_to_point_at(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # the recording's folder cannot be made under a file
    chunk = base64.b64encode(b"\x10\x00" * 800).decode()
    frames = [LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=AudioFormat("audio/pcm", 8000))]
    saved, reports = await _record(blocked / "sess" / "recording.wav", frames, RecordingOptions(rate=8000))
    assert (saved["path"], saved["url"], saved["bytes"], saved["stopped"]) == (None, None, 0, "write_failed")
    assert [t for t, _ in reports] == ["relay.recording_stopped"]


async def test_a_hung_writer_does_not_keep_the_session_from_ending(tmp_path: Path, monkeypatch: Any) -> None:
    import threading

    from relay.recording import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "FINISH_TIMEOUT_S", 0.2)
    release = threading.Event()
    clock_module.writer_executor().submit(release.wait, 30)  # the writer is stuck on a "disk"
    try:
        saved, reports = await _record(tmp_path / "recording.wav", [], RecordingOptions(rate=8000))
    finally:
        release.set()
    assert saved["stopped"] == "write_timeout"
    assert [(t, e["reason"]) for t, e in reports] == [("relay.recording_stopped", "write_timeout")]


async def test_contiguous_chunks_at_the_recording_rate_are_decoded_once_per_commit_and_a_bad_one_is_silence(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Real-time audio at the recording rate: the chunks of a run are placed as they come and decoded together
    when the run is written (one decode per run, not per chunk). A chunk that is not base64 among them is silence
    where it was placed; its neighbours are recorded."""
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    calls: list[str] = []
    real_b64 = lineup_module.b64_audio
    monkeypatch.setattr(lineup_module, "b64_audio", lambda text: calls.append(text) or real_b64(text))
    recorder = SessionRecorder(tmp_path / "recording.wav", "/url", RecordingOptions(rate=24000), started_mono=100.0, report=lambda t, e: None)
    recorder.start()
    fmt = AudioFormat("audio/pcm", 24000)
    good = base64.b64encode(np.full(480, 1000, dtype="<i2").tobytes()).decode()  # 20 ms
    bad = "!" * len(good)
    for i in range(50):  # 1 s of user audio in real time
        chunk = bad if i == 20 else good
        recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
        clock[0] += 0.02
    assert calls == []  # nothing decoded before it is written
    saved = await recorder.finish()
    frames, _ = read_stereo(tmp_path / "recording.wav")
    assert saved["duration_ms"] == 1000.0
    assert len(calls) <= 1 + 50  # the joined run, then (one bad chunk) chunk by chunk
    left = frames[:, 0]
    assert (left[:9600] == 1000).all() and not left[9600:10080].any() and (left[10080:] == 1000).all()


def test_audio_lands_where_it_crossed_the_relay_not_where_the_clock_commits_it(tmp_path: Path, monkeypatch: Any) -> None:
    """Frames are noted as they cross and placed in one pass at the next commit: each at its own crossing time."""
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    recorder = SessionRecorder(tmp_path / "recording.wav", "/url", RecordingOptions(rate=8000), started_mono=100.0, report=lambda t, e: None)
    fmt = AudioFormat("audio/pcm", 8000)
    chunk = base64.b64encode(b"\x10\x00" * 800).decode()  # 100 ms
    clock[0] = 101.0
    recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
    clock[0] = 101.4
    recorder.observe([LogEntry("server", "response.output_audio.delta", {"delta": chunk, "item_id": "a"}, audio_format=fmt)])
    recorder.observe([LogEntry("client", "conversation.item.truncate", {"item_id": "a", "audio_end_ms": 50})])
    clock[0] = 103.0
    blocks: list[tuple[GrowingWav, bytes]] = []
    recorder.commit_due(blocks)
    frames = np.frombuffer(b"".join(data for _, data in blocks), dtype="<i2").reshape(-1, 2)
    assert len(frames) == 8000 * 2.75  # up to the clock less the commit lag
    assert np.flatnonzero(frames[:, 0]).tolist() == list(range(8000, 8800))
    assert np.flatnonzero(frames[:, 1]).tolist() == list(range(11200, 11600))  # cut by the truncate, in order


class _PlacingEverythingLater(SessionRecorder):
    """The recorder without its shortcuts (flood or real time): every chunk is noted and placed at the next commit."""

    def _note(self, channel: int, item_id: object, audio: str, fmt: AudioFormat, mono: float) -> None:
        self._arrive((mono, channel, audio, fmt, item_id, 0.0))

    def _drop_whole(self, *args: Any) -> None:
        super()._drop_whole(*args)
        self._gates = [None, None]  # and no flood gate opens

    def _arm_runs(self) -> None:
        pass  # nor does the real-time run extender take chunks as they cross


_FORMATS = [AudioFormat("audio/pcm", 8000), AudioFormat("audio/pcm", 16000), AudioFormat("audio/pcmu", 8000)]
_STEPS = st.one_of(
    st.tuples(st.just("append"), st.sampled_from([30, 162, 798, 1601]), st.sampled_from(range(len(_FORMATS))), st.booleans()),
    st.tuples(st.just("delta"), st.sampled_from([162, 798, 1602, 799]), st.sampled_from(["a", "b", 7]), st.booleans()),
    st.tuples(st.just("truncate"), st.sampled_from(["a", "b"]), st.integers(0, 3000), st.booleans()),
    st.tuples(st.just("clock"), st.integers(0, 400), st.just(0), st.booleans()),
    st.tuples(st.just("commit"), st.just(0), st.just(0), st.booleans()),
)
# Each step is taken 1 to 40 times in a row (a flood is the same chunk again and again, faster than real time).
_RUNS = st.lists(st.tuples(_STEPS, st.integers(1, 40)), max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=_RUNS)
# An item's flood dropped at the gate, then more of it kept and a truncate inside that: the dropped audio still
# counts in the item's position.
@example(runs=[(("delta", 162, "a", False), 300), (("clock", 400, 0, False), 5), (("commit", 0, 0, False), 1),
               (("delta", 162, "a", False), 10), (("truncate", "a", 3100, False), 1)])  # fmt: skip
# The gate opens on a drop, then the clock passes the moment it closes: the next chunk is recorded.
@example(runs=[(("append", 798, 0, False), 20), (("commit", 0, 0, False), 1), (("append", 798, 0, False), 5),
               (("clock", 60, 0, False), 1), (("append", 798, 0, False), 3)])  # fmt: skip
# Real time both ways, committed every half second, an item change and a truncate: the run extender takes nearly
# every chunk.
@example(runs=(([(("append", 798, 0, False), 1), (("delta", 798, "a", False), 1), (("clock", 50, 0, False), 1)] * 10
               + [(("commit", 0, 0, False), 1)]) * 3 + [(("delta", 798, "b", False), 3), (("truncate", "b", 60, False), 1)]
               + [(("append", 798, 0, False), 1), (("delta", 798, "b", False), 1), (("clock", 50, 0, False), 1)] * 12
               + [(("commit", 0, 0, False), 1), (("append", 798, 0, False), 4)]))  # fmt: skip
def test_a_chunk_placed_as_it_crosses_is_recorded_exactly_as_if_placed_later(monkeypatch: Any, runs: list[Any]) -> None:
    """The shortcuts (in a flood, a chunk dropped against a lane known to be ahead and the chunk after a drop placed
    at once; in real time, a chunk continuing its armed run taken by the run extender) change when a chunk is
    placed, never where: the file, the dropped audio and later truncates come out the same as when every chunk
    waits for the next commit. Floods, real time, resampled and G.711 chunks, padded and broken
    base64, several items, truncates and commits, in any order."""
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    options = RecordingOptions(rate=8000, max_lead_seconds=0.3, max_seconds=20.0)

    async def both() -> list[tuple[dict[str, Any], bytes]]:
        with tempfile.TemporaryDirectory() as tmp:
            recorders = [
                kind(Path(tmp) / f"{kind.__name__}.wav", "/url", options, started_mono=100.0, report=lambda t, e: None)
                for kind in (SessionRecorder, _PlacingEverythingLater)
            ]
            for recorder in recorders:
                recorder.start()
            for kind, a, b, broken in (step for step, times in runs for _ in range(times)):
                if kind == "clock":
                    clock[0] += a / 1000.0
                    continue
                for recorder in recorders:
                    if kind == "commit":
                        blocks: list[Any] = []
                        recorder.commit_due(blocks)
                        clock_module.writer_executor().submit(clock_module.write_blocks, blocks)
                    elif kind == "append":
                        audio = "!!!!" * (a // 4) if broken else base64.b64encode((bytes(range(256)) * 7)[:a]).decode()
                        entry = LogEntry("client", "input_audio_buffer.append", {"audio": audio}, audio_format=_FORMATS[b])
                        recorder.observe([entry])
                    elif kind == "delta":
                        delta = base64.b64encode(b"\x05\x01" * (a // 2) + b"\x09" * (a % 2)).decode()
                        event = {"delta": delta, "item_id": b}
                        recorder.observe([LogEntry("server", "response.output_audio.delta", event, audio_format=_FORMATS[int(broken)])])
                    else:
                        recorder.observe([LogEntry("client", "conversation.item.truncate", {"item_id": a, "audio_end_ms": b})])
            out = []
            for recorder in recorders:
                saved = await recorder.finish()
                out.append(({k: v for k, v in saved.items() if k not in ("path", "url")}, recorder.path.read_bytes()))
            return out

    fast, later = asyncio.run(both())
    assert fast == later


async def test_a_truncate_erases_audio_rendered_but_not_yet_handed_to_the_writer(tmp_path: Path, monkeypatch: Any) -> None:
    """Rendered blocks wait in the clock for the next hand-over; a truncate's erase of the part already rendered is
    a job of the recording's own, and must reach the writer after those blocks, or it erases nothing."""
    monkeypatch.setattr(clock_module, "HAND_OVER_TICKS", 10**9)  # the clock keeps what it renders until asked
    recorder = SessionRecorder(
        tmp_path / "recording.wav", "/url", RecordingOptions(rate=8000), started_mono=time.monotonic(), report=lambda t, e: None
    )
    recorder.start()
    fmt = AudioFormat("audio/pcm", 8000)
    reply = base64.b64encode(b"\\x00\\x10" * 8000).decode()  # 1 s
    recorder.observe([LogEntry("server", "response.output_audio.delta", {"delta": reply, "item_id": "a"}, audio_format=fmt)])
    await asyncio.sleep(COMMIT_EVERY_S * 2 + 0.2)  # rendered at least up to 0.5 s into the reply
    recorder.observe([LogEntry("client", "conversation.item.truncate", {"item_id": "a", "audio_end_ms": 100})])
    await recorder.finish()
    frames, _ = read_stereo(tmp_path / "recording.wav")
    assert frames[:800, 1].any()  # the first 100 ms stay
    assert not frames[900:, 1].any()  # the rest is erased, also what had been rendered before the truncate


async def test_blocks_rendered_after_a_hand_over_inside_a_commit_still_reach_the_writer(monkeypatch: Any) -> None:
    """A recording's commit can hand over what waits (its truncate's erase must follow the audio already rendered)
    and then render more: those later blocks must be written too, after the earlier ones, never appended to a job
    the writer already took."""
    written: list[bytes] = []

    class RunNow:  # the writer thread, run at once: what a job holds when it is taken is what gets written
        def submit(self, fn: Any, *args: Any) -> None:
            fn(*args)

    monkeypatch.setattr(clock_module, "writer_executor", lambda: RunNow())
    monkeypatch.setattr(clock_module, "write_blocks", lambda blocks: written.extend(data for _, data in blocks))
    clock = clock_module.CommitClock(asyncio.get_running_loop())
    wav = GrowingWav(Path("/nonexistent/never-opened.wav"), 8000)

    class Recording:
        def commit_due(self, blocks: list[Any]) -> None:
            blocks.append((wav, b"before"))
            clock.hand_over()  # as a truncate's erase does, from inside the commit
            blocks.append((wav, b"after"))

        def stop_on_error(self, exc: Exception) -> None:
            raise AssertionError(exc)

    recording = Recording()
    clock.join(recording)
    await asyncio.sleep(COMMIT_EVERY_S / COMMIT_PHASES * 1.5)  # one tick
    clock.leave(recording)
    assert written == [b"before", b"after"]


def test_a_real_time_stream_continuing_its_runs_is_taken_as_it_crosses_not_noted_chunk_by_chunk(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """After a commit, each channel whose run a real-time chunk continues is armed: the chunks that follow are taken
    by the run extender in the flush that carries them (nothing is noted to be placed later), and the file is the
    same as when each is placed at the commit (test above)."""
    from types import SimpleNamespace

    from relay.recording import recorder as recorder_module

    clock = [100.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    recorder = SessionRecorder(tmp_path / "r.wav", "/url", RecordingOptions(rate=24000), started_mono=100.0, report=lambda t, e: None)
    noted: list[Any] = []
    real_arrive = recorder._arrive
    monkeypatch.setattr(recorder, "_arrive", lambda arrival: noted.append(arrival) or real_arrive(arrival))
    fmt = AudioFormat("audio/pcm", 24000)
    chunk = base64.b64encode(b"\x10\x00" * 480).decode()  # 20 ms, unpadded
    blocks: list[tuple[GrowingWav, bytes]] = []
    for n in range(100):  # 2 s both ways
        if n % 25 == 0:
            recorder.commit_due(blocks)
        recorder.observe([LogEntry("client", "input_audio_buffer.append", {"audio": chunk}, audio_format=fmt)])
        recorder.observe([LogEntry("server", "response.output_audio.delta", {"delta": chunk, "item_id": "a"}, audio_format=fmt)])
        clock[0] += 0.02
    assert len(noted) == 2 * 25  # only the first half second, before the first commit that saw the streams
    clock[0] += 1.0
    recorder.commit_due(blocks)
    frames = np.frombuffer(b"".join(data for _, data in blocks), dtype="<i2").reshape(-1, 2)
    assert np.flatnonzero(frames[:, 0]).tolist() == list(range(0, 48000))
    assert np.flatnonzero(frames[:, 1]).tolist() == list(range(0, 48000))
