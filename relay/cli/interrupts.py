"""Ctrl-C (SIGINT) while the process starts: noted, never lost, acted on as soon as the command can.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be. While the relay
imports its libraries, that can be inside code that turns it into something else: CPython reports an exception
raised while a C module imports another (`ssl` importing `_socket`) as an ImportError, asyncio takes that for "no
ssl here" and goes on, and the Ctrl-C is gone; a daemon then starts and runs until the next signal. So the process
entry point calls `note_from_now()` before anything else: from then on a Ctrl-C is recorded, not raised (a second
one raises at once: the user insists). Before a command runs, `hand_over()` ends it with KeyboardInterrupt (exit
130) if a Ctrl-C was noted, and, for a command that is not a daemon, puts Python's handler back. A daemon (`serve`,
`sim`, `mic`) keeps noting until its event loop's own SIGINT handler is in, then asks `noted()` and acts on a Ctrl-C
that came in between as on one that comes later (docs/lifecycle.md).

State: one process-wide counter, touched by the signal handler (which Python runs on the main thread). No I/O.
"""

from __future__ import annotations

import signal
from types import FrameType


class _Interrupts:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt


_interrupts = _Interrupts()


def note_from_now() -> None:
    """From now on a Ctrl-C is noted, not raised (the second one raises)."""
    signal.signal(signal.SIGINT, _interrupts)


def noted() -> bool:
    """Whether a Ctrl-C came while they were being noted."""
    return _interrupts.count > 0


def hand_over(*, daemon: bool) -> None:
    """The command is about to run: a Ctrl-C noted so far ends it now (KeyboardInterrupt). A command that is not a
    daemon gets Python's own handler back; a daemon keeps noting until its event loop handles SIGINT itself."""
    noting = signal.getsignal(signal.SIGINT) is _interrupts
    if noting and not daemon:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if noting and noted():
        raise KeyboardInterrupt
