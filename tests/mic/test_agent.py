"""MicAgent (relay/mic/agent.py): the mic client's decisions, driven with real buffers and the callback's reads.

No devices: microphone blocks are numpy arrays, the speaker is `PlaybackBuffer.read_into` called the way the
PortAudio callback calls it, server events are the dicts the upstream sends.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest

from audio.pcm import decode_base64_audio, encode_base64_audio, float_to_pcm16, pcm16_to_float, ulaw_decode
from audio.playback import PlaybackBuffer, PlaybackWriter
from relay.mic.agent import MicAgent
from relay.mic.display import TerminalDisplay

DEVICE_RATE = 48000


def session_event(
    kind: str = "session.created", in_rate: int = 24000, out_rate: int = 24000, in_type: str = "audio/pcm"
) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": "evt_1",
        "session": {
            "id": "sess_1",
            "audio": {
                "input": {"format": {"type": in_type, "rate": in_rate}},
                "output": {"format": {"type": "audio/pcm", "rate": out_rate}},
            },
        },
    }


def make_agent(
    duplex: str = "full", chunk_ms: int = 20, prefill_ms: int = 0, capture_rate: int = DEVICE_RATE
) -> tuple[MicAgent, PlaybackBuffer]:
    buffer = PlaybackBuffer(DEVICE_RATE, prefill_ms=prefill_ms)
    writer = PlaybackWriter(buffer, 24000)
    return MicAgent(capture_rate=capture_rate, writer=writer, chunk_ms=chunk_ms, duplex=duplex), buffer


def sine(freq: float, rate: int, secs: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * secs)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def capture(agent: MicAgent, signal: np.ndarray, block: int) -> list[dict[str, Any]]:
    frames: list[str] = []
    for i in range(0, len(signal), block):
        frames += agent.on_capture(signal[i : i + block])
    return [orjson.loads(f) for f in frames]


def appended_audio(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(
        decode_base64_audio(f["audio"]) for f in frames if f["type"] == "input_audio_buffer.append"
    )


def delta(item_id: str, response_id: str, samples: np.ndarray, rate: int = 24000) -> dict[str, Any]:
    return {
        "type": "response.output_audio.delta",
        "event_id": "evt_d",
        "response_id": response_id,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "delta": encode_base64_audio(float_to_pcm16(samples)),
    }


def play(buffer: PlaybackBuffer, ms: int, block_ms: int = 10) -> np.ndarray:
    out = []
    for _ in range(ms // block_ms):
        block = np.zeros(DEVICE_RATE * block_ms // 1000, dtype=np.float32)
        buffer.read_into(block)
        out.append(block)
    return np.concatenate(out)


def test_nothing_is_sent_before_the_session_exists() -> None:
    agent, _ = make_agent()
    assert capture(agent, sine(440, DEVICE_RATE, 0.2), 960) == []


def test_appends_carry_exactly_chunk_ms_at_the_session_input_rate() -> None:
    agent, _ = make_agent(chunk_ms=20)
    agent.on_server_event(session_event(in_rate=16000))
    frames = capture(agent, sine(440, DEVICE_RATE, 1.0), 1000)  # device blocks unrelated to chunk size
    assert all(f["type"] == "input_audio_buffer.append" for f in frames)
    assert {len(decode_base64_audio(f["audio"])) for f in frames} == {320 * 2}
    assert len(frames) >= 48  # 1 s minus the resampler's start-up delay
    assert len({f["event_id"] for f in frames}) == len(frames)


def test_chunk_ms_setting_sets_the_append_size() -> None:
    agent, _ = make_agent(chunk_ms=40)
    agent.on_server_event(session_event(in_rate=24000))
    frames = capture(agent, sine(440, DEVICE_RATE, 0.5), 480)
    assert {len(decode_base64_audio(f["audio"])) for f in frames} == {960 * 2}


def test_captured_tone_keeps_its_frequency_in_the_appends() -> None:
    agent, _ = make_agent(capture_rate=44100)
    agent.on_server_event(session_event(in_rate=24000))
    audio = pcm16_to_float(appended_audio(capture(agent, sine(440, 44100, 2.0), 882)))
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak = np.argmax(spectrum) * 24000 / len(audio)
    assert abs(peak - 440) / 440 < 0.005


def test_an_input_rate_change_sends_old_audio_at_the_old_rate_then_switches() -> None:
    agent, _ = make_agent()
    agent.on_server_event(session_event(in_rate=24000))
    before = capture(agent, sine(440, DEVICE_RATE, 0.25), 960)
    owed = [orjson.loads(f) for f in agent.on_server_event(session_event("session.updated", in_rate=16000))]
    after = capture(agent, sine(440, DEVICE_RATE, 0.25), 960)
    assert {len(decode_base64_audio(f["audio"])) for f in before} == {960}
    assert owed and all(len(decode_base64_audio(f["audio"])) <= 960 for f in owed)
    # 0.25 s at 24 kHz in total before the switch: the filter's tail was not lost.
    assert len(appended_audio(before + owed)) // 2 == pytest.approx(6000, abs=2)
    assert {len(decode_base64_audio(f["audio"])) for f in after} == {640}
    assert agent.input_format.rate == 16000


def test_a_repeated_session_updated_changes_nothing() -> None:
    agent, _ = make_agent()
    agent.on_server_event(session_event(in_rate=24000))
    capture(agent, sine(440, DEVICE_RATE, 0.1), 960)
    assert agent.on_server_event(session_event("session.updated", in_rate=24000)) == []
    assert agent.on_server_event(session_event("session.updated", in_rate=24000)) == []


def test_g711_session_gets_ulaw_appends_at_8k() -> None:
    agent, _ = make_agent()
    agent.on_server_event(session_event(in_type="audio/pcmu"))
    frames = capture(agent, sine(440, DEVICE_RATE, 0.5), 960)
    assert {len(decode_base64_audio(f["audio"])) for f in frames} == {160}
    decoded = pcm16_to_float(ulaw_decode(appended_audio(frames)))
    assert np.max(np.abs(decoded)) > 0.3


def test_half_duplex_sends_silence_while_the_assistant_is_audible() -> None:
    agent, buffer = make_agent(duplex="half")
    agent.on_server_event(session_event())
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.5)))
    assert agent.muted
    loud = sine(440, DEVICE_RATE, 0.2)
    frames = capture(agent, loud, 960)
    assert frames and not np.any(pcm16_to_float(appended_audio(frames)))
    agent.on_server_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    play(buffer, 1000)  # the speaker plays it all and then 500 ms of silence (past the echo tail)
    assert not agent.muted
    assert np.any(pcm16_to_float(appended_audio(capture(agent, loud, 960))))


def test_full_duplex_keeps_the_microphone_open_during_playback() -> None:
    agent, _ = make_agent(duplex="full")
    agent.on_server_event(session_event())
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.5)))
    assert not agent.muted
    assert np.any(pcm16_to_float(appended_audio(capture(agent, sine(440, DEVICE_RATE, 0.2), 960))))


def test_output_deltas_are_played_at_the_device_rate() -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event(out_rate=16000))
    agent.on_server_event(delta("item_a", "resp_1", sine(500, 16000, 0.3)))
    agent.on_server_event(
        {"type": "response.output_audio.done", "item_id": "item_a", "response_id": "resp_1"}
    )
    heard = play(buffer, 400)
    assert buffer.played_ms("item_a") == pytest.approx(300, abs=1)
    loud = np.flatnonzero(np.abs(heard) > 0.01)
    assert loud[-1] - loud[0] == pytest.approx(0.3 * DEVICE_RATE, rel=0.01)
    spectrum = np.abs(np.fft.rfft(heard[loud[0] : loud[-1]]))
    assert np.argmax(spectrum) * DEVICE_RATE / (loud[-1] - loud[0]) == pytest.approx(500, rel=0.01)


def test_barge_in_stops_playback_cancels_and_truncates_to_what_was_played() -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}})
    for _ in range(10):
        agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.1)))
    play(buffer, 370)
    frames = [
        orjson.loads(f)
        for f in agent.on_server_event(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": "item_u"}
        )
    ]
    assert [f["type"] for f in frames] == ["response.cancel", "conversation.item.truncate"]
    assert frames[0]["response_id"] == "resp_1"
    assert frames[1]["item_id"] == "item_a"
    assert frames[1]["content_index"] == 0
    assert frames[1]["audio_end_ms"] == 370
    assert not np.any(play(buffer, 20))  # the next callback block is already silence
    assert agent.stats.barge_ins[0].audio_end_ms == 370


def test_late_deltas_of_a_cancelled_response_are_not_played() -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.2)))
    play(buffer, 50)
    agent.on_server_event({"type": "input_audio_buffer.speech_started", "item_id": "item_u"})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.2)))
    assert buffer.buffered_samples == 0
    assert agent.stats.dropped_deltas == 1


def test_barge_in_after_response_done_truncates_without_cancelling() -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 1.0)))
    agent.on_server_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    play(buffer, 200)
    frames = [orjson.loads(f) for f in agent.on_server_event({"type": "input_audio_buffer.speech_started"})]
    assert [f["type"] for f in frames] == ["conversation.item.truncate"]
    assert frames[0]["audio_end_ms"] == 200


def test_speech_without_audible_assistant_sends_nothing() -> None:
    agent, _ = make_agent()
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    assert agent.on_server_event({"type": "input_audio_buffer.speech_started"}) == []


def test_barge_in_during_a_stutter_of_the_live_reply_still_stops_and_truncates_it() -> None:
    """The buffer ran dry mid-reply (the network was late) while its response is still live: the user hears one
    reply being interrupted, so it is cancelled and truncated, and its next delta is not played over them."""
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.3)))
    play(buffer, 400)  # what reached the speaker (the resampler keeps a tail while the item is open), then underrun
    assert not buffer.is_active
    heard = buffer.played_ms("item_a")
    assert heard > 250
    frames = [orjson.loads(f) for f in agent.on_server_event({"type": "input_audio_buffer.speech_started"})]
    assert [f["type"] for f in frames] == ["response.cancel", "conversation.item.truncate"]
    assert frames[1]["item_id"] == "item_a" and frames[1]["audio_end_ms"] == heard
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.3)))
    assert buffer.buffered_samples == 0


def test_the_refusal_of_a_barge_in_cancel_the_server_beat_is_not_shown() -> None:
    """A server that cancels its own response on speech_started refuses the barge-in's cancel that crossed it:
    that expected race is not an error on the terminal; other errors still are."""
    out = io.StringIO()
    buffer = PlaybackBuffer(DEVICE_RATE, prefill_ms=0)
    agent = MicAgent(capture_rate=DEVICE_RATE, writer=PlaybackWriter(buffer, 24000), display=TerminalDisplay(out))
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.created", "response": {"id": "resp_1"}})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.5)))
    play(buffer, 100)
    cancel = orjson.loads(agent.on_server_event({"type": "input_audio_buffer.speech_started"})[0])
    agent.on_server_event({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})
    refused = {"code": "response_cancel_not_active", "message": "no active response", "event_id": cancel["event_id"]}
    agent.on_server_event({"type": "error", "error": refused})
    assert "response_cancel_not_active" not in out.getvalue()
    agent.on_server_event({"type": "error", "error": {"code": "invalid_value", "message": "bad", "event_id": "other"}})
    assert "invalid_value" in out.getvalue()


def test_truncate_uses_the_content_index_of_the_audio() -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    event = delta("item_a", "resp_1", sine(300, 24000, 0.5))
    event["content_index"] = 1
    agent.on_server_event(event)
    play(buffer, 100)
    frames = [orjson.loads(f) for f in agent.on_server_event({"type": "input_audio_buffer.speech_started"})]
    assert frames[-1]["content_index"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"type": 5}',
        '{"type": "response.output_audio.delta", "item_id": "x", "delta": "%%%not base64"}',
        '{"type": "response.output_audio.delta", "item_id": "x", "delta": 12}',
        '{"type": "response.output_audio.delta", "item_id": "x", "delta": "AAE="}',
        '{"type": "response.output_audio.delta"}',
        '{"type": "session.updated", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": -5}}}}}',
        '{"type": "session.updated", "session": {"audio": {"input": {"format": "pcm"}, "output": 3}}}',
        '{"type": "session.updated", "session": []}',
        '{"type": "response.created", "response": "x"}',
        '{"type": "response.done"}',
        '{"type": "error", "error": "boom"}',
        '{"type": "conversation.item.input_audio_transcription.completed", "transcript": null}',
        '{"type": "response.output_text.delta", "delta": ["x"]}',
    ],
)
def test_garbage_server_frames_are_survived(text: str) -> None:
    agent, buffer = make_agent()
    agent.on_server_event(session_event())
    assert agent.on_server_text(text) == []
    assert agent.input_format.rate == 24000
    play(buffer, 20)
    assert len(capture(agent, sine(440, DEVICE_RATE, 0.1), 960)) >= 3


@pytest.mark.parametrize(("duplex", "chunk_ms"), [("both", 20), ("half", 0), ("full", -20), ("half", 2.5)])
def test_bad_options_are_refused(duplex: str, chunk_ms: Any) -> None:
    with pytest.raises(ValueError):
        make_agent(duplex=duplex, chunk_ms=chunk_ms)


def test_terminal_shows_user_and_assistant_transcripts() -> None:
    out = io.StringIO()
    buffer = PlaybackBuffer(DEVICE_RATE)
    agent = MicAgent(
        capture_rate=DEVICE_RATE, writer=PlaybackWriter(buffer, 24000), display=TerminalDisplay(out)
    )
    agent.on_server_event(session_event())
    agent.on_server_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u1",
            "transcript": "hello there",
        }
    )
    for piece in ("Hi", ", you", " said hello"):
        agent.on_server_event(
            {"type": "response.output_text.delta", "item_id": "a1", "response_id": "r", "delta": piece}
        )
    agent.on_server_event(
        {"type": "response.output_text.done", "item_id": "a1", "response_id": "r", "text": "x"}
    )
    agent.on_server_event(
        {"type": "response.output_audio_transcript.delta", "item_id": "a2", "delta": "openai words"}
    )
    agent.on_server_event({"type": "response.output_audio_transcript.done", "item_id": "a2"})
    lines = out.getvalue().splitlines()
    assert "you: hello there" in lines
    assert "assistant: Hi, you said hello" in lines
    assert "assistant: openai words" in lines


def test_notices_do_not_split_an_assistant_line() -> None:
    out = io.StringIO()
    display = TerminalDisplay(out)
    display.assistant_delta("a1", "Echo ")
    display.notice("saved item_u1")
    display.assistant_delta("a1", "of you.")
    display.assistant_done("a1")
    assert out.getvalue().splitlines() == ["* saved item_u1", "assistant: Echo of you."]


def test_an_interrupted_reply_is_shown_as_interrupted() -> None:
    out = io.StringIO()
    buffer = PlaybackBuffer(DEVICE_RATE, prefill_ms=0)
    agent = MicAgent(capture_rate=DEVICE_RATE, writer=PlaybackWriter(buffer, 24000), display=TerminalDisplay(out))
    agent.on_server_event(session_event())
    agent.on_server_event({"type": "response.output_text.delta", "item_id": "item_a", "delta": "Once upon a"})
    agent.on_server_event(delta("item_a", "resp_1", sine(300, 24000, 0.5)))
    play(buffer, 100)
    agent.on_server_event({"type": "input_audio_buffer.speech_started"})
    assert "assistant: Once upon a [interrupted]" in out.getvalue().splitlines()


def test_tty_status_line_shows_state_level_and_partial_words() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    display = TerminalDisplay(out)
    display.status("listening")
    for _ in range(5):
        display.level(-20.0, muted=False)
    display.assistant_delta("a1", "Hello")
    assert out.getvalue().endswith("\r")  # the cursor goes back to column 0 after each redraw
    last = out.getvalue().split("\r")[-2]
    assert "[listening]" in last and "mic ####" in last and "assistant: Hello" in last


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_display_whose_reader_went_away_stops_writing_and_says_so_once() -> None:
    display = TerminalDisplay(_ClosedPipe())
    told: list[str] = []
    display.on_lost = lambda: told.append("lost")
    display.notice("microphone ...")
    display.user_transcript("hello")
    display.finish()
    assert told == ["lost"] and isinstance(display.lost, BrokenPipeError)


def test_a_reply_the_session_cut_short_is_still_shown_when_it_ends() -> None:
    out = io.StringIO()
    display = TerminalDisplay(out)
    display.assistant_delta("item_1", "Echo ")
    display.assistant_delta("item_1", "of ")
    display.finish()
    assert out.getvalue().splitlines()[-1] == "assistant: Echo of [session ended]"
