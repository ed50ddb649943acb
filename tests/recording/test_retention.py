"""Retention: session folders and event logs older than `retention_days` are deleted (at start, then hourly),
each deletion logged; nothing recent, nothing the relay did not create, no symlink target is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from relay.bridge import new_session_id
from relay.core.items import MINTED_SESSION_ID_RE
from relay.recording.retention import DAY_S, sweep
from tests.support.relay_fixtures import running_relay_process


def make(path: Path, age_days: float, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    aged = time.time() - age_days * DAY_S
    os.utime(path, (aged, aged))
    return path


def age(path: Path, age_days: float) -> None:
    aged = time.time() - age_days * DAY_S
    os.utime(path, (aged, aged))


def build_tree(root: Path) -> dict[str, Path]:
    data, logs = root / "data", root / "logs"
    paths = {
        "old_session": make(data / "sessions" / "sess_OLD0000000000000" / "recording.wav", 40),
        "old_item": make(data / "sessions" / "sess_OLD0000000000000" / "item_1.wav", 45),
        "mixed_session_new_file": make(data / "sessions" / "sess_MIXED00000000000" / "recording.wav", 1),
        "mixed_session_old_file": make(data / "sessions" / "sess_MIXED00000000000" / "item_1.wav", 40),
        "new_session": make(data / "sessions" / "sess_NEW0000000000000" / "recording.wav", 2),
        "old_log": make(logs / "2020-01-01" / "sess_OLD0000000000000.jsonl", 40),
        "new_log": make(logs / "2020-01-02" / "sess_NEW0000000000000.jsonl", 3),
        "old_foreign_file": make(logs / "2020-01-01" / "notes.txt", 40),
        "old_other_folder": make(data / "sessions" / "not a session" / "x.wav", 40),
        "old_operator_backup": make(data / "sessions" / "backup" / "x.wav", 40),  # a valid id, not a minted one
        "old_short_session_name": make(data / "sessions" / "sess_old" / "x.wav", 40),
        "old_outside": make(data / "keep.wav", 40),
    }
    for name in ("sess_OLD0000000000000", "sess_MIXED00000000000", "sess_NEW0000000000000", "backup", "sess_old"):
        age(data / "sessions" / name, 40)
    age(logs / "2020-01-01", 40)
    # A symlink that looks like an old session: neither it nor its target is deleted.
    target = make(root / "elsewhere" / "precious.wav", 40)
    (data / "sessions" / "sess_LINK000000000000").symlink_to(target.parent)
    paths["link_target"] = target
    return paths


def test_only_what_is_older_than_the_retention_is_deleted(tmp_path: Path) -> None:
    paths = build_tree(tmp_path)
    deleted = sweep(tmp_path / "data", tmp_path / "logs", 30)
    assert sorted((d.kind, d.path.name) for d in deleted) == [
        ("log", "sess_OLD0000000000000.jsonl"), ("session", "sess_OLD0000000000000")
    ]
    gone = {"old_session", "old_item", "old_log"}
    for name, path in paths.items():
        assert path.exists() == (name not in gone), name
    assert (tmp_path / "data" / "sessions" / "sess_LINK000000000000").is_symlink()


def test_the_relays_session_ids_have_the_shape_retention_deletes() -> None:
    assert all(MINTED_SESSION_ID_RE.fullmatch(new_session_id()) for _ in range(200))


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    paths = build_tree(tmp_path)
    assert sweep(tmp_path / "data", tmp_path / "logs", 0) == []
    assert all(path.exists() for path in paths.values())


def test_missing_folders_are_nothing_to_delete(tmp_path: Path) -> None:
    assert sweep(tmp_path / "nope", tmp_path / "nothing", 1) == []


async def test_serve_sweeps_at_start_and_logs_each_deletion(tmp_path: Path) -> None:
    paths = build_tree(tmp_path)
    async with running_relay_process(tmp_path, env={"RELAY_RETENTION_DAYS": "30"}) as relay:
        first = await relay.wait_for_log("relay.retention_deleted", lambda r: r["kind"] == "session")
        second = await relay.wait_for_log("relay.retention_deleted", lambda r: r["kind"] == "log")
    assert first["path"] == str(paths["old_session"].parent) and first["age_days"] >= 40
    assert second["path"] == str(paths["old_log"])
    assert not paths["old_session"].exists() and paths["new_session"].exists() and paths["new_log"].exists()
