"""relay.spool keeps the fallback audio of sessions on disk instead of in memory: a fallback save and a resume's
re-send read it back whole, its files go once the audio is saved or released and when the session ends, and a
disk that fails loses the kept audio with a logged reason without breaking the session
(docs/client-input.md, "Memory")."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.core.keptaudio import KeptAudioBudget
from relay.core.session import RelaySession
from relay.spool import SPOOL_FOLDER, AudioSpool, SpoolOwner
from tests.core.test_memory_bounds import BYTES_PER_S, assistant_item, done, drain, j, retrieved, session, user_item


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the spool did not get there in time"
        time.sleep(0.005)


def pcm(n_bytes: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(n_bytes))


@pytest.fixture
def budget() -> KeptAudioBudget:
    return KeptAudioBudget()


@pytest.fixture
def spool(budget: KeptAudioBudget) -> Iterator[AudioSpool]:
    spool = AudioSpool(budget, interval=0.005, segment_bytes=16 * 1024)
    yield spool
    spool.stop()


def spooled_session(
    budget: KeptAudioBudget, spool: AudioSpool, folder: Path, **policy: object
) -> tuple[RelaySession, SpoolOwner]:
    core = session(budget, **policy)
    owner = spool.session(folder)
    core.spool_owner = owner
    return core, owner


def stream_chunks(core: RelaySession, item_id: str, chunks: list[bytes]) -> None:
    core.receive_server_text(
        j({"type": "response.output_item.added", "event_id": "a", "response_id": "r", "item": assistant_item(item_id)})
    )
    for chunk in chunks:
        delta = base64.b64encode(chunk).decode()
        core.receive_server_text(
            j({"type": "response.output_audio.delta", "event_id": "d", "response_id": "r", "item_id": item_id, "delta": delta})
        )


def all_spooled(budget: KeptAudioBudget) -> bool:
    return all(p.data is None for p in budget._order)


def spool_files(folder: Path) -> list[Path]:
    return sorted((folder / SPOOL_FOLDER).glob("*.b64"))


def test_spooled_assistant_audio_is_saved_whole_by_a_fallback_save(
    budget: KeptAudioBudget, spool: AudioSpool, tmp_path: Path
) -> None:
    core, _ = spooled_session(budget, spool, tmp_path)
    chunks = [pcm(960, n) for n in range(150)]  # 3 s in 20 ms deltas: several runs, several segments
    stream_chunks(core, "item_a", chunks)
    wait_until(lambda: all_spooled(budget))
    assert len(budget) > 1 and spool_files(tmp_path)  # on disk, not in memory
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a"))  # no audio in the answer: the fallback is the kept stream
    (save,) = drain(core)["save"]
    assert (save.source, save.pcm) == ("stream", b"".join(chunks))


def test_spooled_appended_audio_is_saved_and_re_sent_as_it_came(
    budget: KeptAudioBudget, spool: AudioSpool, tmp_path: Path
) -> None:
    core, _ = spooled_session(budget, spool, tmp_path)
    core.receive_server_text(
        j({"type": "session.updated", "event_id": "u", "session": {"audio": {"input": {"turn_detection": None}}}})
    )
    texts = [base64.b64encode(pcm(960, n)).decode() for n in range(100)]  # 2 s of 20 ms appends
    for text in texts:
        core.receive_client_text(j({"type": "input_audio_buffer.append", "audio": text}))
    wait_until(lambda: all_spooled(budget))
    # A resume re-sends the uncommitted audio append by append, from the spool.
    assert core.uncommitted_audio(5000.0) == [(text, 20.0) for text in texts]
    core.receive_server_text(j({"type": "input_audio_buffer.committed", "event_id": "c", "item_id": "u1"}))
    done(core, user_item("u1"))
    retrieved(core, user_item("u1"))
    (save,) = drain(core)["save"]
    assert save.pcm == b"".join(base64.b64decode(t) for t in texts)


async def test_spool_files_go_once_the_audio_is_saved_and_the_folder_at_session_end(
    budget: KeptAudioBudget, spool: AudioSpool, tmp_path: Path
) -> None:
    core, owner = spooled_session(budget, spool, tmp_path)
    stream_chunks(core, "item_a", [pcm(960, n) for n in range(300)])  # 6 s: ~18 segments of 16 KiB
    wait_until(lambda: all_spooled(budget))
    assert len(spool_files(tmp_path)) > 3
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a"))
    assert drain(core)["save"]
    assert budget.kept_bytes == 0
    wait_until(lambda: len(spool_files(tmp_path)) <= 1)  # at most the segment still being written to
    stream_chunks(core, "item_b", [pcm(960, n) for n in range(50)])  # never saved: the session ends first
    core.session_closed()
    await asyncio.wait_for(spool.release(owner), 5.0)
    assert not (tmp_path / SPOOL_FOLDER).exists()
    assert budget.kept_bytes == 0 and len(budget) == 0


def test_spooled_audio_the_budget_released_is_reported_and_its_files_go(spool: AudioSpool, tmp_path: Path) -> None:
    budget = spool.budget
    budget.max_bytes = 2 * BYTES_PER_S
    first, _ = spooled_session(budget, spool, tmp_path / "first")
    second, _ = spooled_session(budget, spool, tmp_path / "second")
    stream_chunks(first, "old", [pcm(960, n) for n in range(150)])  # 3 s: more than the budget on its own
    wait_until(lambda: all_spooled(budget))
    stream_chunks(second, "new", [pcm(960, n) for n in range(50)])
    assert budget.released_bytes > 0 and budget.kept_bytes <= budget.max_bytes
    wait_until(lambda: len(spool_files(tmp_path / "first")) <= 4)  # released segments are deleted
    done(first, assistant_item("old"))
    retrieved(first, assistant_item("old"))
    out = drain(first)
    assert out["save"] == []
    assert [e.event for e in out["log"] if e.type == "relay.retrieve_failed"] == [{"item_id": "old", "reason": "audio_released"}]


async def test_a_disk_that_fails_loses_the_kept_audio_with_a_logged_reason_and_the_session_goes_on(
    budget: KeptAudioBudget, spool: AudioSpool, tmp_path: Path
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the session folder should be")
    with capture_logs() as logs:
        core, owner = spooled_session(budget, spool, blocker / "sessions" / "sess_a")
        stream_chunks(core, "item_a", [pcm(960, n) for n in range(50)])
        wait_until(lambda: all_spooled(budget))
    failures = [e for e in logs if e["event"] == "relay.audio_spool_failed"]
    assert len(failures) == 1 and failures[0]["session_id"] == "sess_a" and failures[0]["error"]
    done(core, assistant_item("item_a"))
    retrieved(core, assistant_item("item_a"))
    out = drain(core)
    assert out["save"] == []
    assert [e.event for e in out["log"] if e.type == "relay.retrieve_failed"] == [
        {"item_id": "item_a", "reason": "audio_released"}
    ]
    # The session goes on: later audio is forwarded and counted as before, and nothing stays counted at its end.
    stream_chunks(core, "item_b", [pcm(960, n) for n in range(5)])
    assert len(drain(core)["client"]) == 6
    core.session_closed()
    await asyncio.wait_for(spool.release(owner), 5.0)
    assert budget.kept_bytes == 0
