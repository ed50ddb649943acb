"""The session's side of its upstream connection (docs/resume.md): connected (the pinned session goes first),
dropped (the client is told, its frames are held), restored on a new upstream (the configuration and completed
items rebuilt, the new upstream's answers hidden and logged as `dir: relay`), and then the held frames sent.
The bridge reconnects and keeps the clock; this decides what crosses.
"""

from __future__ import annotations

import enum
from typing import Any, Final

from relay.core import events as ev
from relay.core.afterdone import RetrieveAfterDone
from relay.core.frames import b64_decoded_len, deep_merge, parse_event, wire_len
from relay.core.keptaudio import KeptAudioBudget
from relay.core.outbox import LogEntry
from relay.core.policy import SessionPolicy
from relay.core.resume import GapQueue, HeldFrame, Restore, RestoreEcho, ResumeState
from relay.core.tools import ToolState

PINNED_SESSION_EVENT_ID: Final = "relay_pinned_session"


class SessionState(enum.Enum):
    """Where a session is in its life. OPEN: frames cross. CLOSING: nothing is forwarded any more, only answers
    to the relay's own retrieves are read (also while a dropped upstream is being replaced: a resume reopens).
    CLOSED: over; kept audio has been given back."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class UpstreamSide(RetrieveAfterDone):
    """The upstream's lifecycle in one session (a base of RelaySession). The session's parts form one line of
    bases, Outbox <- AppendedAudio <- ItemBook <- RetrieveAfterDone <- UpstreamSide <- RelaySession: each part
    sees the ones below it, and the order methods resolve in is the order they read."""

    def __init__(self, policy: SessionPolicy, kept_audio: KeptAudioBudget | None) -> None:
        super().__init__(policy, kept_audio)
        self.state = SessionState.OPEN
        self.upstream_session_id: str | None = None
        self._connect_ms: float | None = None
        self._upstream_connected_logged = False
        self.tools = ToolState(policy.tools, relay_events=policy.relay_events) if policy.tools is not None else None
        # Upstream resume: what a new upstream needs, the client frames held while there is none, and the
        # rebuild in progress on a new one.
        self.resume = ResumeState(policy.resume) if policy.resume is not None else None
        self._gap: GapQueue | None = None
        self._restore: Restore | None = None
        self._restore_echo: RestoreEcho | None = None  # late answers to the last finished restore
        # The client gets one session.created per session: the first upstream's, or, when that one dropped before
        # sending it, the first new upstream's.
        self._client_has_session_created = False

    def upstream_connected(self, connect_ms: float) -> None:
        """The upstream handshake completed: send the pinned session, if any, before any client frame."""
        self._connect_ms = connect_ms
        if self.policy.pinned_session or self.tools is not None:
            session = deep_merge({"type": "realtime"}, self.policy.pinned_session)
            if self.tools is not None:
                session = self.tools.merge_tools(session)
            update = {"type": ev.SESSION_UPDATE, "event_id": PINNED_SESSION_EVENT_ID, "session": session}
            self._send_relay_frame(update)
            self._session_update_sent(update, None)  # in line like a client's; its session.updated is not the client's

    def _pin(self, event: dict[str, Any]) -> dict[str, Any]:
        """A `session.update` with the operator's pinned fields merged over the client's (pins win)."""
        session = event.get("session")
        merged = deep_merge(session if isinstance(session, dict) else {}, self.policy.pinned_session)
        return {**event, "session": merged}

    def _log_upstream_connected(self, event: dict[str, Any] | None) -> None:
        """The first event of an upstream (normally its session.created) names the upstream's session."""
        self._upstream_connected_logged = True
        if event is not None and event.get("type") == ev.SESSION_CREATED:
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("id"), str):
                self.upstream_session_id = session["id"]
        self.log_relay(
            ev.RELAY_UPSTREAM_CONNECTED,
            {"upstream_session_id": self.upstream_session_id, "connect_ms": self._connect_ms},
        )

    # ---- upstream resume (docs/resume.md) -------------------------------------------------------------
    # The bridge reconnects; the core tells the client, holds client frames, rebuilds the session on the new
    # upstream (hiding its answers, logged as `dir: relay`) and then sends what it held.

    def upstream_dropped(self, close_code: int | None, error: str) -> None:
        """The upstream dropped and a resume begins: forwarding to the client goes on, client frames are held."""
        assert self.resume is not None
        self.state = SessionState.OPEN
        self._restore = self._restore_echo = None
        number, ended, self._gap = self.resume.dropped(
            self.updates.upstream_lost(),  # the dropped upstream answers none of them: sent again after the restore
            self.uncommitted_audio(self.resume.policy.buffer_seconds * 1000.0),
        )
        self._resent_input_from_ms = self._appended_ms - self._gap.audio_ms
        self.log_relay(ev.RELAY_UPSTREAM_INTERRUPTED, {"close_code": close_code, "error": error, "drop": number})
        if self.policy.relay_events:
            self._send_client_event(
                {"type": ev.RELAY_UPSTREAM_INTERRUPTED, "event_id": f"relay_interrupted_{number}", "close_code": close_code}
            )
        if ended is not None:
            text = self._send_client_event(ended)
            self.log(LogEntry("relay", ev.RESPONSE_DONE, ended, bytes=wire_len(text)))

    def begin_restore(self, attempt: int, connect_ms: float) -> None:
        """A new upstream is connected: send the effective configuration and the completed items."""
        assert self.resume is not None
        self._connect_ms = connect_ms
        self._restore = self.resume.restore(attempt, self.updates.effective_session(self._resume_overlay))
        for frame in self._restore.first_frames:
            self._send_relay_frame(frame)

    def _resume_overlay(self, session: dict[str, Any]) -> dict[str, Any]:
        """What the relay adds to every client `session.update` (the pins, the server tools) goes over the
        resumed configuration too."""
        pinned: dict[str, Any] = self._pin({"session": session})["session"]
        return self.tools.merge_tools(pinned) if self.tools is not None else pinned

    @property
    def restore_finished(self) -> bool:
        return self._restore is not None and self._restore.done

    def _restore_answer(self, text: str) -> None:
        """An event of the new upstream while the restore runs: never forwarded, logged as the relay's."""
        assert self._restore is not None
        event = parse_event(text)
        kind = event.get("type") if event is not None else None
        if event is not None and kind in (ev.SESSION_CREATED, ev.SESSION_UPDATED):
            self._apply_session_config(event)  # the audio formats in effect on the new upstream
            if kind == ev.SESSION_CREATED:
                self._upstream_connected_logged, self.upstream_session_id = False, None
                self._log_upstream_connected(event)
        if kind == ev.SESSION_CREATED and not self._client_has_session_created:
            # The dropped upstream never sent one: a client waiting for its session.created gets this one.
            self._client_has_session_created = True
            self._client.append(text)
            self.log(LogEntry("server", kind, event, bytes=wire_len(text)))
        else:
            record = event if event is not None else {"invalid_json": True, "text": text[:4096]}
            self.log(LogEntry("relay", kind if isinstance(kind, str) else None, record, bytes=wire_len(text)))
        for frame in self._restore.answer(event):
            self._send_relay_frame(frame)

    def _restore_echo_taken(self, kind: object, event: dict[str, Any], text: str) -> bool:
        """A late answer to the finished restore (`RestoreEcho`): logged as the relay's, not forwarded."""
        echo = self._restore_echo
        assert echo is not None
        if not echo.takes(kind, event):
            return False
        if kind == ev.SESSION_UPDATED:
            self._apply_session_config(event)
        if echo.over:
            self._restore_echo = None
        self.log(LogEntry("relay", kind if isinstance(kind, str) else None, event, bytes=wire_len(text)))
        return True

    def restore_abandoned(self, attempt: int, error: str) -> None:
        """This attempt failed (no connection, or it dropped or stalled during the restore); held frames stay."""
        self.state = SessionState.OPEN
        restore, self._restore = self._restore, None
        record: dict[str, Any] = {"attempt": attempt, "result": "failed", "error": error}
        if restore is not None:
            record["items_restored"] = restore.restored
        self.log_relay(ev.RELAY_UPSTREAM_RESUME_ATTEMPT, record)

    def finish_restore(self, attempt: int, downtime_ms: float) -> None:
        """The new upstream has the session: send what was held, in order, and tell the client."""
        assert self.resume is not None and self._restore is not None and self._gap is not None
        restore, self._restore = self._restore, None
        gap, self._gap = self._gap, None
        self._restore_echo = RestoreEcho(restore.item_ids, config=not self.updates.awaiting_answer)
        self.log_relay(ev.RELAY_UPSTREAM_RESUME_ATTEMPT, {"attempt": attempt, "result": "ok"})
        # What the new upstream hears is the last `gap.audio_ms` of the appended audio (older appends are dropped
        # first), so its audio time 0 is that far back on this session's timeline.
        self._upstream_audio_origin_ms = max(0.0, self._appended_ms - gap.audio_ms)
        self._uncommitted_start_ms = max(self._uncommitted_start_ms, self._upstream_audio_origin_ms)
        for frame in gap.drain(self.resume.drops):
            if isinstance(frame, HeldFrame):
                self._upstream.append(frame.text)
                self.log(frame.record)  # logged as it is sent, after the restore: the log keeps the wire's order
            else:
                self._send_relay_frame(frame, self.input_format)  # audio re-sent: logged as a summary
        self.resume.resumes += 1
        items_dropped = self.resume.history.dropped + restore.refused
        record = {
            "attempt": attempt,
            "downtime_ms": round(downtime_ms, 3),
            "items_restored": restore.restored,
            "items_dropped": items_dropped,
            "config_refused": restore.config_refused,
            "frames_dropped": gap.dropped_frames,
            "audio_dropped_ms": round(gap.dropped_audio_ms, 3),
        }
        self.log_relay(ev.RELAY_UPSTREAM_RESUMED, record)
        if self.policy.relay_events:
            public = {key: record[key] for key in ("attempt", "downtime_ms", "items_restored", "items_dropped")}
            self._send_client_event(
                {"type": ev.RELAY_UPSTREAM_RESUMED, "event_id": f"relay_resumed_{self.resume.drops}", **public}
            )

    def resume_failed(self, attempts: int, downtime_ms: float, reason: str) -> None:
        """No new upstream (every attempt failed, or the session ended meanwhile): the held frames are dropped."""
        self._restore = None
        gap, self._gap = self._gap, None
        self.log_relay(
            ev.RELAY_UPSTREAM_RESUME_FAILED,
            {
                "attempts": attempts,
                "downtime_ms": round(downtime_ms, 3),
                "reason": reason,
                "frames_dropped": len(gap.entries) + gap.dropped_frames if gap is not None else 0,
            },
        )

    def _hold_in_gap(self, text: str, kind: str, event: dict[str, Any], record: LogEntry) -> None:
        """A client frame while no upstream is there: held, with its record, until the restore is done. A frame
        dropped from the gap (past its bounds, or when the resume fails) is never sent and gets no record of its
        own; `frames_dropped` counts it."""
        assert self._gap is not None
        audio_ms: float | None = None
        if kind == ev.INPUT_AUDIO_BUFFER_APPEND:
            audio = event.get("audio")
            audio_ms = self.input_format.ms(b64_decoded_len(audio)) if isinstance(audio, str) else 0.0
        self._gap.add(text, audio_ms, record)
