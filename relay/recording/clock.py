"""When recordings are rendered and written: the commit clock of each event loop and the one writer thread.

Boundary: `CommitClock` decides when each recording renders what the wall clock has passed (`commit_due`), one
in COMMIT_PHASES of them every COMMIT_EVERY_S / COMMIT_PHASES, and hands what they rendered to `writer_executor()`,
the one thread that writes every recording of the process, as one job every HAND_OVER_TICKS ticks. What a recording
renders is `SessionRecorder`'s business (`relay.recording.recorder`); the bytes reach the file through `GrowingWav`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from typing import Final, Protocol

from relay.recording.wavfile import GrowingWav

COMMIT_EVERY_S: Final = 0.5  # the file reaches the OS at least every second
# One clock per event loop commits every recording, one in COMMIT_PHASES of them every COMMIT_EVERY_S / COMMIT_PHASES
# (20 ms): sessions started together do not render and hand over their audio all in one loop turn (rendering half
# a second of a session costs ~0.06 ms, so 100 sessions at once pause the loop for ~6 ms; with ten phases a tick
# took 0.63 ms (p99 1.0-1.3 ms), with 25 it takes 0.26 ms (p99 0.5 ms), the same CPU in total; the frames waiting
# behind a tick pay it in latency), and the writer thread is handed one job per tick instead of one per session
# (each hand-off wakes it and moves the GIL).
COMMIT_PHASES: Final = 25
# The ticks' blocks go to the writer thread every HAND_OVER_TICKS ticks (100 ms), not every tick: each hand-over wakes
# the thread, and a woken thread takes the GIL from the loop for a while.
HAND_OVER_TICKS: Final = 5


class Committing(Protocol):
    """What the clock asks of a recording."""

    def commit_due(self, blocks: list[tuple[GrowingWav, bytes]]) -> None: ...

    def stop_on_error(self, exc: Exception) -> None: ...


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def writer_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that writes every recording of this process, in submission order."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-recording")
        return _executor


def write_blocks(blocks: list[tuple[GrowingWav, bytes]]) -> None:
    for wav, data in blocks:
        wav.append(data)  # a failure stays with its file (`GrowingWav.error`), the others are written


class CommitClock:
    """The commit timer of every recording on one event loop: recorders join one of COMMIT_PHASES slots in turn,
    and every COMMIT_EVERY_S / COMMIT_PHASES the clock commits the next slot's recorders; what they rendered goes to
    the writer thread as one job every HAND_OVER_TICKS ticks. Runs only while some recorder has joined."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: list[list[Committing]] = [[] for _ in range(COMMIT_PHASES)]
        self._next_join = 0
        self._next_tick = 0
        self._timer: asyncio.TimerHandle | None = None
        self._rendered: list[tuple[GrowingWav, bytes]] = []  # rendered since the last hand-over

    @classmethod
    def of_running_loop(cls) -> CommitClock:
        loop = asyncio.get_running_loop()
        clock = _clocks.get(loop)
        if clock is None:
            clock = _clocks[loop] = cls(loop)
        return clock

    def join(self, recorder: Committing) -> None:
        self._slots[self._next_join].append(recorder)
        self._next_join = (self._next_join + 1) % COMMIT_PHASES
        if self._timer is None:
            self._timer = self._loop.call_later(COMMIT_EVERY_S / COMMIT_PHASES, self._tick)

    def leave(self, recorder: Committing) -> None:
        """`recorder` stops being committed; what was rendered and not handed over yet goes to the writer first (a
        recording's last blocks and its close come after them)."""
        for slot in self._slots:
            if recorder in slot:
                slot.remove(recorder)
                break
        self.hand_over()
        if self._timer is not None and not any(self._slots):
            self._timer.cancel()
            self._timer = None

    def hand_over(self) -> None:
        """What the ticks rendered goes to the writer thread now (before a job of a recording's own that must come
        after its blocks: erasing a truncated reply, the close)."""
        blocks, self._rendered = self._rendered, []
        if blocks:
            writer_executor().submit(write_blocks, blocks)

    def _tick(self) -> None:
        self._timer = self._loop.call_later(COMMIT_EVERY_S / COMMIT_PHASES, self._tick)
        slot = self._slots[self._next_tick]
        self._next_tick = (self._next_tick + 1) % COMMIT_PHASES
        for recorder in list(slot):
            # A list of its own per recorder, added to what waits after it rendered: a recorder may hand over what
            # waits while it commits (a truncate's erase), and what it renders after that must not go into a list
            # the writer already has.
            blocks: list[tuple[GrowingWav, bytes]] = []
            try:
                recorder.commit_due(blocks)
            except Exception as exc:  # a relay bug stops that recording, not every other one
                recorder.stop_on_error(exc)
            self._rendered.extend(blocks)
        if self._next_tick % HAND_OVER_TICKS == 0:
            self.hand_over()


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CommitClock] = weakref.WeakKeyDictionary()
