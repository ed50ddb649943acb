"""Build event logs (docs/event-log.md) of known sessions for the `logs` tests: records with chosen t_ms, in writer order.

A `SessionLog` collects records in any order and writes them the way the relay's writer would: sorted by
t_ms (stable), seq 1..N (null for relay.log_gap), ts = start + t_ms, audio payloads already summarized, to
`<dir>/<YYYY-MM-DD>/<session_id>.jsonl`. The helpers model
one server-VAD voice turn, a manual (commit + response.create) turn, retrieves and the relay's own records,
so a test states its timings and checks the summary against them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 26, 1, 0, 0, tzinfo=UTC)


def audio_summary(audio_ms: float, rate: int = 24000) -> dict[str, Any]:
    return {"audio_bytes": int(audio_ms * rate / 1000) * 2, "audio_ms": audio_ms, "sha256": "0123456789abcdef"}


class SessionLog:
    def __init__(self, session_id: str = "sess_a", start: datetime = START) -> None:
        self.session_id = session_id
        self.start = start
        self.records: list[dict[str, Any]] = []

    # -- raw records ---------------------------------------------------------------------------------------

    def add(self, t_ms: float, direction: str, type_: str, event: dict[str, Any] | None = None,
            numbered: bool = True) -> dict[str, Any]:
        event = {"type": type_, **(event or {})}
        ts = (self.start + timedelta(milliseconds=t_ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        item = event.get("item")
        response = event.get("response")
        record = {
            "v": 1,
            "ts": ts,
            "t_ms": t_ms,
            "session_id": self.session_id,
            "seq": 0 if numbered else None,  # numbered in finished()
            "dir": direction,
            "type": type_,
            "event_id": event.get("event_id"),
            "item_id": event.get("item_id") or (item.get("id") if isinstance(item, dict) else None),
            "response_id": event.get("response_id") or (response.get("id") if isinstance(response, dict) else None),
            "bytes": len(json.dumps(event)),
            "event": event,
        }
        self.records.append(record)
        return record

    def finished(self) -> list[dict[str, Any]]:
        """The records in writer order with their seq numbers assigned (idempotent)."""
        self.records.sort(key=lambda r: r["t_ms"])
        seq = 0
        for record in self.records:
            if record["seq"] is not None:
                seq += 1
                record["seq"] = seq
        return self.records

    def lines(self) -> list[str]:
        return [json.dumps(r) for r in self.finished()]

    def path_in(self, log_dir: Path) -> Path:
        return log_dir / self.start.strftime("%Y-%m-%d") / f"{self.session_id}.jsonl"

    def write(self, log_dir: Path) -> Path:
        path = self.path_in(log_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in self.lines()))
        return path

    # -- the relay's own records ---------------------------------------------------------------------------

    def started(self, t_ms: float = 0.0, **extra: Any) -> None:
        self.add(t_ms, "relay", "relay.session_started",
                 {"upstream_url": "ws://127.0.0.1:8090/v1/realtime", **extra})

    def connected(self, t_ms: float, connect_ms: float = 12.5, upstream_session_id: str = "up_1") -> None:
        self.add(t_ms, "relay", "relay.upstream_connected",
                 {"upstream_session_id": upstream_session_id, "connect_ms": connect_ms})
        self.add(t_ms + 0.5, "server", "session.created",
                 {"event_id": "ev_created", "session": {"id": upstream_session_id}})

    def ended(self, t_ms: float, reason: str = "client_closed", client_close: int = 1000,
              upstream_close: int | None = 1000, log_dropped: int = 0) -> None:
        counts = {d: sum(1 for r in self.records if r["dir"] == d) for d in ("client", "server", "relay")}
        self.add(t_ms, "relay", "relay.session_ended",
                 {"client_close_code": client_close, "upstream_close_code": upstream_close, "reason": reason,
                  "counts": counts, "log_dropped": log_dropped})

    def gap(self, t_ms: float, from_seq: int, to_seq: int, reason: str = "queue_full") -> None:
        self.add(t_ms, "relay", "relay.log_gap", {"from_seq": from_seq, "to_seq": to_seq, "reason": reason},
                 numbered=False)

    def client_error(self, t_ms: float, code: str, event_id: str | None = None) -> None:
        self.add(t_ms, "relay", "relay.client_error", {"code": code, "event_id": event_id})

    def server_error(self, t_ms: float, code: str, message: str, event_id: str | None = None) -> None:
        self.add(t_ms, "server", "error",
                 {"event_id": "ev_err", "error": {"type": "invalid_request_error", "code": code,
                                                  "message": message, "param": None, "event_id": event_id}})

    # -- client side ---------------------------------------------------------------------------------------

    def append_audio(self, t_ms: float, audio_ms: float = 20.0) -> None:
        self.add(t_ms, "client", "input_audio_buffer.append", {"audio": audio_summary(audio_ms)})

    def append_stream(self, from_ms: float, to_ms: float, chunk_ms: float = 100.0) -> None:
        t = from_ms
        while t < to_ms:
            self.append_audio(t, chunk_ms)
            t += chunk_ms

    # -- server side: one response ---------------------------------------------------------------------------

    def response(self, *, response_id: str, assistant_item: str, created: float, first_audio: float | None,
                 deltas: int, delta_every: float, delta_ms: float, done: float | None,
                 status: str = "completed", text: str = "hello") -> None:
        """response.created, output_item.added, `deltas` audio deltas from `first_audio`, text, response.done."""
        self.add(created, "server", "response.created",
                 {"event_id": f"ev_{response_id}_c", "response": {"id": response_id, "status": "in_progress"}})
        self.add(created + 1, "server", "response.output_item.added",
                 {"event_id": f"ev_{response_id}_oa", "response_id": response_id, "output_index": 0,
                  "item": {"id": assistant_item, "type": "message", "role": "assistant", "content": []}})
        if first_audio is not None:
            self.add(first_audio - 0.5, "server", "response.output_text.delta",
                     {"event_id": f"ev_{response_id}_t", "response_id": response_id, "item_id": assistant_item,
                      "output_index": 0, "content_index": 0, "delta": text})
            for i in range(deltas):
                self.add(first_audio + i * delta_every, "server", "response.output_audio.delta",
                         {"event_id": f"ev_{response_id}_d{i}", "response_id": response_id,
                          "item_id": assistant_item, "output_index": 0, "content_index": 0,
                          "delta": audio_summary(delta_ms)})
        if done is not None:
            self.add(done, "server", "response.done",
                     {"event_id": f"ev_{response_id}_done", "response": {"id": response_id, "status": status}})

    def user_speech(self, *, item_id: str, started: float, stopped: float, transcript: str | None = None,
                    committed_after: float = 5.0) -> None:
        """speech_started, speech_stopped, committed and the user item (server VAD)."""
        self.add(started, "server", "input_audio_buffer.speech_started",
                 {"event_id": f"ev_{item_id}_ss", "audio_start_ms": int(started), "item_id": item_id})
        self.add(stopped, "server", "input_audio_buffer.speech_stopped",
                 {"event_id": f"ev_{item_id}_se", "audio_end_ms": int(stopped), "item_id": item_id})
        self.add(stopped + committed_after, "server", "input_audio_buffer.committed",
                 {"event_id": f"ev_{item_id}_cm", "item_id": item_id, "previous_item_id": None})
        self.add(stopped + committed_after + 1, "server", "conversation.item.added",
                 {"event_id": f"ev_{item_id}_add",
                  "item": {"id": item_id, "type": "message", "role": "user",
                           "content": [{"type": "input_audio", "transcript": None}]}})
        if transcript is not None:
            self.add(stopped + committed_after + 2, "server",
                     "conversation.item.input_audio_transcription.completed",
                     {"event_id": f"ev_{item_id}_tr", "item_id": item_id, "content_index": 0,
                      "transcript": transcript, "usage": {"type": "duration", "seconds": 1}})

    def voice_turn(self, *, n: int, speech_started: float, speech_stopped: float, first_audio: float,
                   deltas: int = 5, delta_every: float = 100.0, delta_ms: float = 100.0,
                   done: float | None = None, status: str = "completed",
                   transcript: str | None = None) -> tuple[str, str, str]:
        """A full server-VAD voice turn; returns (user item, response id, assistant item)."""
        user, resp, assistant = f"item_u{n}", f"resp_{n}", f"item_a{n}"
        self.user_speech(item_id=user, started=speech_started, stopped=speech_stopped, transcript=transcript)
        created = speech_stopped + 10
        if done is None:
            done = first_audio + deltas * delta_every + 5
        self.response(response_id=resp, assistant_item=assistant, created=created, first_audio=first_audio,
                      deltas=deltas, delta_every=delta_every, delta_ms=delta_ms, done=done, status=status)
        return user, resp, assistant

    # -- retrieves --------------------------------------------------------------------------------------------

    def relay_retrieve(self, t_ms: float, item_id: str) -> None:
        self.add(t_ms, "relay", "conversation.item.retrieve",
                 {"item_id": item_id, "event_id": f"relay_retrieve_{item_id}"})

    def relay_retrieved(self, t_ms: float, item_id: str, audio_ms: float = 500.0) -> None:
        self.add(t_ms, "relay", "conversation.item.retrieved",
                 {"event_id": f"ev_ret_{item_id}",
                  "item": {"id": item_id, "type": "message", "role": "assistant",
                           "content": [{"type": "output_audio", "audio": audio_summary(audio_ms)}]}})

    def relay_retrieve_error(self, t_ms: float, item_id: str) -> None:
        self.add(t_ms, "relay", "error",
                 {"event_id": f"ev_reterr_{item_id}",
                  "error": {"type": "invalid_request_error", "code": "item_not_found", "message": "no such item",
                            "param": None, "event_id": f"relay_retrieve_{item_id}"}})

    def retrieve_failed(self, t_ms: float, item_id: str, reason: str, error: Any = None) -> None:
        event: dict[str, Any] = {"item_id": item_id, "reason": reason}
        if error is not None:
            event["error"] = error
        self.add(t_ms, "relay", "relay.retrieve_failed", event)

    def audio_saved(self, t_ms: float, item_id: str, path: str, duration_ms: float = 500.0,
                    source: str = "retrieved") -> None:
        self.add(t_ms, "relay", "relay.audio_saved",
                 {"item_id": item_id, "path": path,
                  "url": f"/relay/sessions/{self.session_id}/items/{item_id}.wav", "duration_ms": duration_ms,
                  "audio_bytes": int(duration_ms * 48), "rate": 24000, "source": source})


def two_turn_session(session_id: str = "sess_two") -> SessionLog:
    """A session with two voice turns of known latency (speech end -> first audio 400 ms, then 900 ms)."""
    log = SessionLog(session_id)
    log.started(0.0, client_model="gpt-realtime")
    log.connected(15.0)
    log.append_stream(100.0, 1500.0)
    log.voice_turn(n=1, speech_started=300.0, speech_stopped=1200.0, first_audio=1600.0,
                   transcript="hello there")
    log.relay_retrieve(2200.0, "item_a1")
    log.relay_retrieved(2230.0, "item_a1")
    log.audio_saved(2240.0, "item_a1", f"data/sessions/{session_id}/item_a1.wav")
    log.append_stream(3000.0, 4500.0)
    log.voice_turn(n=2, speech_started=3200.0, speech_stopped=4100.0, first_audio=5000.0)
    log.ended(6000.0)
    return log
