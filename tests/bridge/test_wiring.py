"""relay.wiring builds a session's parts from settings the same way for `serve` and `mic`; relay.saving keeps a
session's files inside its folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.core.formats import DEFAULT_FORMAT, AudioFormat
from relay.core.keptaudio import KeptAudioBudget
from relay.core.outbox import AudioToSave
from relay.errors import ConfigError
from relay.eventlog.writer import EventLog
from relay.saving import NotSaved, save_item_audio
from relay.settings import Settings
from relay.wiring import session_environment, session_files, simulator_options, upstream_target


@pytest.fixture
def event_log(tmp_path: Path) -> Iterator[EventLog]:
    log = EventLog(None)
    yield log
    log.close()


def test_the_environment_follows_the_settings(tmp_path: Path, event_log: EventLog) -> None:
    settings = dataclasses.replace(Settings(), data_dir=str(tmp_path), retrieve_timeout_seconds=2.5, kept_audio_max_bytes=1234)
    env = session_environment(settings, event_log)
    assert env.retrieve_timeout == 2.5 and env.metrics is None
    assert env.kept_audio.max_bytes == 1234  # mic: a budget of its own
    assert env.recording is not None and env.recording.from_frames
    assert env.files.folder("sess_a") == tmp_path / "sessions" / "sess_a"
    assert env.files.recording_path("sess_a") == tmp_path / "sessions" / "sess_a" / "recording.wav"
    assert env.files.audio_url("sess_a", "item_1") == "/relay/sessions/sess_a/items/item_1.wav"
    assert env.files.recording_url("sess_a") == "/relay/sessions/sess_a/recording.wav"


def test_serve_shares_one_kept_audio_budget_and_mic_records_the_devices(event_log: EventLog) -> None:
    budget = KeptAudioBudget(99)
    assert session_environment(Settings(), event_log, kept_audio=budget).kept_audio is budget
    mic = session_environment(Settings(), event_log, record_frames=False)
    assert mic.recording is not None and not mic.recording.from_frames
    off = dataclasses.replace(Settings(), record_sessions=False)
    assert session_environment(off, event_log).recording is None


def test_the_embedded_simulator_needs_no_folder_qualified_model() -> None:
    target = upstream_target(Settings(), "ws://127.0.0.1:1/v1/realtime", simulator=True)
    assert "model=sim" in target.url


def test_a_bad_simulator_knob_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        simulator_options(dataclasses.replace(Settings(), sim_knobs={"no_such_knob": 1}))


async def test_an_item_id_that_leaves_the_session_folder_is_refused(tmp_path: Path) -> None:
    files = session_files(tmp_path)
    escaping = AudioToSave(item_id="../../escaped", pcm=bytes(480), format=DEFAULT_FORMAT, source="retrieved")
    refused = await save_item_audio(files, "sess_a", escaping)
    assert isinstance(refused, NotSaved) and refused.reason == "unsafe_item_id"
    assert not any(tmp_path.rglob("*.wav"))
    files.folder("sess_a").mkdir(parents=True)
    kept = AudioToSave(item_id="item_1", pcm=bytes(480), format=DEFAULT_FORMAT, source="retrieved")
    saved = await save_item_audio(files, "sess_a", kept)
    assert isinstance(saved, dict) and saved["url"] == "/relay/sessions/sess_a/items/item_1.wav"
    assert Path(saved["path"]) == tmp_path / "sessions" / "sess_a" / "item_1.wav"


async def test_audio_no_wav_can_hold_is_a_failed_save_not_a_crash(tmp_path: Path) -> None:
    """An upstream may state any rate; a WAV's header holds 32 bits of it."""
    files = session_files(tmp_path)
    files.folder("sess_a").mkdir(parents=True)
    absurd = AudioToSave(item_id="item_1", pcm=bytes(480), format=AudioFormat("audio/pcm", 10**15), source="stream")
    failed = await save_item_audio(files, "sess_a", absurd)
    assert isinstance(failed, NotSaved) and failed.reason == "write_failed"
    assert list(files.folder("sess_a").iterdir()) == []  # no half-written .part left behind
