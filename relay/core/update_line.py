"""The `session.update`s of one session waiting for their answers, in the order they went upstream.

Boundary: the line and what it is for, nothing else. The upstream answers updates in order: a `session.updated`
answers the oldest one waiting (a repeat of the previous answer word for word answers nothing: Yandex has been
seen answering one update twice), and an `error` naming one's event_id refuses it. Two things are read from the
line: the input format in effect (an update's format applies to the appends that follow it at once, long before
its answer: docs/event-log.md, `audio_ms`) and the configuration a resume restores (the merge of every client
update the upstream accepted: docs/resume.md). Pure: no I/O; fed by the session core.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from relay.core.formats import AudioFormat
from relay.core.frames import deep_merge

MAX_WAITING: Final = 64  # an upstream that never answers: past this many, the oldest is forgotten


@dataclass(frozen=True)
class WaitingUpdate:
    """One `session.update` on its way: its event_id (when a string), its `session` ({} when not an object), the
    input format it asks for (None when it names none) and its text as the upstream got it, to send again if the
    upstream drops before answering. The relay's own update (the pins, at connect) has no text: a restore states
    the pins itself, so it is neither merged nor sent again."""

    event_id: str | None
    session: dict[str, Any]
    input_format: AudioFormat | None
    text: str | None


class UpdateLine:
    def __init__(self) -> None:
        self.accepted: dict[str, Any] = {}  # the deep merge of the client updates the upstream accepted
        self._waiting: deque[WaitingUpdate] = deque(maxlen=MAX_WAITING)
        self._last_answer: object = None  # the `session` of the last session.updated, to tell a repeat

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def awaiting_answer(self) -> bool:
        return bool(self._waiting)

    def sent(self, update: WaitingUpdate) -> None:
        self._waiting.append(update)

    def answered(self, session: object) -> None:
        """A `session.updated` whose `session` is `session`: the oldest update waiting is accepted."""
        repeat, self._last_answer = session == self._last_answer, session
        if self._waiting and not repeat:
            update = self._waiting.popleft()
            if update.text is not None:
                self.accepted = deep_merge(self.accepted, update.session)

    def refused(self, event_id: object) -> bool:
        """An `error` naming `event_id`: that update never took effect. True when one was waiting."""
        if isinstance(event_id, str):
            for update in self._waiting:
                if update.event_id == event_id:
                    self._waiting.remove(update)
                    return True
        return False

    def upstream_lost(self) -> list[str]:
        """The upstream dropped: the client updates it never answered are to be sent again (after the restore, so
        the client gets its answers) and keep their places in line; the relay's own goes (a restore sends the pins
        itself). The texts, in order."""
        self._last_answer = None  # the new upstream's answers are its own
        self._waiting = deque((u for u in self._waiting if u.text is not None), maxlen=MAX_WAITING)
        return [u.text for u in self._waiting if u.text is not None]

    def asked_input_format(self) -> AudioFormat | None:
        """The input format the newest waiting update asks for, or None when none asks for one."""
        for update in reversed(self._waiting):
            if update.input_format is not None:
                return update.input_format
        return None

    def effective_session(self, overlay: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """What a new upstream is sent: the accepted merge, with the operator's overlay (pins, server tools) on top."""
        merged = deep_merge({"type": "realtime"}, self.accepted)
        return overlay(merged) if overlay is not None else merged
