"""What a person sees of a mic session: where the agent reports, and the terminal that shows it.

Boundary: presentation only. `Display` is the interface `MicAgent` reports through (the base class shows nothing:
tests, --quiet); `TerminalDisplay` prints transcripts as whole lines and, on a TTY, a status line with a level
meter. No audio, no protocol, no session here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TextIO

LEVEL_EVERY: Final = 5  # level meter redraws: one per this many microphone blocks


class Display:
    """Where the agent reports what a person should see. The base class shows nothing (tests, --quiet)."""

    def status(self, text: str) -> None:
        pass

    def level(self, dbfs: float, muted: bool) -> None:
        pass

    def user_transcript(self, text: str) -> None:
        pass

    def assistant_delta(self, item_id: str, text: str) -> None:
        pass

    def assistant_done(self, item_id: str, interrupted: bool = False) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


class TerminalDisplay(Display):
    """Transcripts as whole lines; on a TTY also a status line (state, level meter, the assistant's words so far)
    redrawn in place.

    Only whole lines are ever written outside the status line, so other writers of the same stream (the
    daemon's log records) never land in the middle of a transcript.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._status = "connecting"
        self._meter = ""
        self._partial: dict[str, str] = {}  # assistant text per item, printed as one line when done
        self._level_calls = 0
        # The first failure to write (a reader that went away: `mic | head`); nothing is written after it, and
        # `on_lost` is told once (the mic command ends the session, then reports it).
        self.lost: OSError | None = None
        self.on_lost: Callable[[], None] | None = None

    def _write(self, text: str) -> None:
        if self.lost is not None:
            return
        try:
            self._out.write(text)
            self._out.flush()
        except OSError as exc:
            self.lost = exc
            if self.on_lost is not None:
                self.on_lost()

    def _redraw(self) -> None:
        if not self._tty:
            return
        words = ""
        if self._partial:
            text = next(reversed(self._partial.values()))
            words = " | assistant: " + (text if len(text) <= 60 else "..." + text[-57:])
        # Cursor back to column 0 afterwards: whatever else writes to the terminal (log records) overwrites
        # the status line instead of being appended to it; the next redraw puts it back.
        self._write(f"\r\x1b[2K[{self._status}] {self._meter}{words}\r")

    def _line(self, text: str) -> None:
        self._write(("\r\x1b[2K" if self._tty else "") + text + "\n")
        self._redraw()

    def status(self, text: str) -> None:
        self._status = text
        if self._tty:
            self._redraw()
        else:
            self._line(f"[{text}]")

    def level(self, dbfs: float, muted: bool) -> None:
        if not self._tty:
            return
        # One redraw per LEVEL_EVERY blocks (~10 per second with 20 ms blocks) is plenty for a meter.
        self._level_calls += 1
        if self._level_calls % LEVEL_EVERY:
            return
        bars = max(0, min(20, int((dbfs + 60.0) / 3.0)))
        self._meter = ("muted " if muted else "mic ") + "#" * bars + "." * (20 - bars) + f" {dbfs:5.0f} dB"
        self._redraw()

    def user_transcript(self, text: str) -> None:
        self._line(f"you: {text.strip()}")

    def assistant_delta(self, item_id: str, text: str) -> None:
        self._partial[item_id] = self._partial.get(item_id, "") + text
        self._redraw()

    def assistant_done(self, item_id: str, interrupted: bool = False) -> None:
        text = self._partial.pop(item_id, None)
        if text is not None:
            self._line(f"assistant: {text.strip()}" + (" [interrupted]" if interrupted else ""))

    def notice(self, text: str) -> None:
        self._line(f"* {text}")

    def finish(self) -> None:
        """The session is over: a reply it cut short is still shown, as far as it got."""
        for text in list(self._partial.values()):
            self._line(f"assistant: {text.strip()} [session ended]")
        self._partial.clear()
        if self._tty:
            self._write("\r\x1b[2K")
