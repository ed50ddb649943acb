"""`relay.inspect.summary`: per-session analysis of event logs (docs/event-log.md) built with known timings (tests/support/logs_fixtures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from relay.inspect.fields import percentiles
from relay.inspect.summary import summarize
from tests.support.logs_fixtures import SessionLog, two_turn_session


def only_session(path: Path, session_id: str | None = None) -> dict[str, Any]:
    result = summarize(path, session_id)
    assert len(result.sessions) == 1
    return result.sessions[0]


def test_two_voice_turns_give_their_turn_count_and_exact_speech_to_audio_latencies(tmp_path: Path) -> None:
    two_turn_session().write(tmp_path)
    s = only_session(tmp_path)
    assert s["turn_count"] == 2
    assert [t["speech_to_first_audio_ms"] for t in s["turns"]] == [400.0, 900.0]
    assert s["latency_ms"]["speech_to_first_audio"] == {"count": 2, "p50": 400.0, "p95": 900.0, "max": 900.0}


def test_turns_name_their_user_items_responses_and_transcripts(tmp_path: Path) -> None:
    two_turn_session().write(tmp_path)
    turns = only_session(tmp_path)["turns"]
    assert [(t["user_item_ids"], t["response_id"], t["assistant_item_ids"]) for t in turns] == [
        (["item_u1"], "resp_1", ["item_a1"]),
        (["item_u2"], "resp_2", ["item_a2"]),
    ]
    assert turns[0]["input"] == "audio"
    assert turns[0]["user_transcript"] == "hello there"
    assert turns[0]["assistant_text"] == "hello"
    assert turns[0]["status"] == "completed"
    assert turns[0]["speech_started_ms"] == 300.0
    assert turns[0]["speech_stopped_ms"] == 1200.0
    assert turns[0]["first_audio_ms"] == 1600.0


def test_session_times_duration_close_codes_and_end_reason_come_from_the_relay_records(tmp_path: Path) -> None:
    log = two_turn_session()
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["started_at"] == "2026-11-26T01:00:00.000000Z"
    assert s["ended_at"] == "2026-11-26T01:00:06.000000Z"
    assert s["duration_s"] == 6.0
    assert (s["ended"], s["end_reason"], s["client_close_code"], s["upstream_close_code"]) == (
        True, "client_closed", 1000, 1000)
    assert s["upstream_url"] == "ws://127.0.0.1:8090/v1/realtime"
    assert s["client_model"] == "gpt-realtime"
    assert (s["upstream_session_id"], s["connect_ms"]) == ("up_1", 12.5)


def test_events_are_counted_by_direction_and_type(tmp_path: Path) -> None:
    log = two_turn_session()
    log.write(tmp_path)
    s = only_session(tmp_path)
    records = log.finished()
    assert s["events"]["total"] == len(records)
    for direction in ("client", "server", "relay"):
        assert s["events"][direction] == sum(1 for r in records if r["dir"] == direction)
    assert s["event_types"]["client"] == {"input_audio_buffer.append": 29}
    assert s["event_types"]["server"]["response.output_audio.delta"] == 10
    assert s["event_types"]["relay"]["conversation.item.retrieve"] == 1


def test_audio_seconds_in_and_out_add_up_the_append_and_delta_durations(tmp_path: Path) -> None:
    two_turn_session().write(tmp_path)
    assert only_session(tmp_path)["audio_s"] == {"in": 2.9, "out": 1.0}


def test_a_session_without_session_ended_is_reported_as_not_ended(tmp_path: Path) -> None:
    log = SessionLog("sess_cut")
    log.started()
    log.voice_turn(n=1, speech_started=100.0, speech_stopped=500.0, first_audio=800.0)
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["ended"] is False
    assert s["end_reason"] is None
    assert s["turn_count"] == 1


def test_request_to_done_runs_from_the_clients_response_create_in_a_manual_turn(tmp_path: Path) -> None:
    log = SessionLog("sess_manual")
    log.started()
    log.append_stream(100.0, 1000.0)
    log.add(1000.0, "client", "input_audio_buffer.commit", {"event_id": "c1"})
    log.add(1003.0, "server", "input_audio_buffer.committed", {"item_id": "item_u1", "previous_item_id": None})
    log.add(1050.0, "client", "response.create", {"event_id": "c2"})
    log.response(response_id="resp_1", assistant_item="item_a1", created=1060.0, first_audio=1300.0,
                 deltas=3, delta_every=50.0, delta_ms=100.0, done=1750.0)
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["turns"][0]["request_to_done_ms"] == 700.0
    assert s["turns"][0]["speech_to_first_audio_ms"] is None  # manual turn: no VAD speech end
    assert s["latency_ms"]["request_to_done"] == {"count": 1, "p50": 700.0, "p95": 700.0, "max": 700.0}


def test_request_to_done_runs_from_the_commit_when_the_client_did_not_create_the_response(tmp_path: Path) -> None:
    log = SessionLog("sess_commit")
    log.add(1000.0, "client", "input_audio_buffer.commit", {})
    log.add(1002.0, "server", "input_audio_buffer.committed", {"item_id": "item_u1"})
    log.response(response_id="resp_1", assistant_item="item_a1", created=1010.0, first_audio=1200.0,
                 deltas=1, delta_every=10.0, delta_ms=10.0, done=1400.5)
    log.write(tmp_path)
    assert only_session(tmp_path)["turns"][0]["request_to_done_ms"] == 400.5


def test_a_refused_response_create_is_not_the_request_of_the_next_response(tmp_path: Path) -> None:
    log = SessionLog("sess_refused")
    log.add(500.0, "client", "response.create", {"event_id": "c_bad"})
    log.server_error(510.0, "conversation_already_has_active_response", "busy", event_id="c_bad")
    log.add(900.0, "client", "input_audio_buffer.commit", {})
    log.response(response_id="resp_1", assistant_item="item_a1", created=910.0, first_audio=None,
                 deltas=0, delta_every=10.0, delta_ms=10.0, done=1000.0)
    log.write(tmp_path)
    assert only_session(tmp_path)["turns"][0]["request_to_done_ms"] == 100.0


def test_under_server_vad_request_to_done_runs_from_the_servers_commit(tmp_path: Path) -> None:
    log = two_turn_session()
    log.write(tmp_path)
    s = only_session(tmp_path)
    records = log.finished()
    committed = [r["t_ms"] for r in records if r["type"] == "input_audio_buffer.committed"]
    done = [r["t_ms"] for r in records if r["type"] == "response.done"]
    assert len(committed) == len(done) == 2
    expected = [round(d - c, 3) for c, d in zip(committed, done, strict=True)]
    assert [turn["request_to_done_ms"] for turn in s["turns"]] == expected
    assert s["latency_ms"]["request_to_done"]["count"] == 2


def test_barge_in_marks_the_interrupted_turn_and_the_next_latency_counts_from_the_new_speech_end(
    tmp_path: Path,
) -> None:
    log = SessionLog("sess_barge")
    log.started()
    user1, resp1, assistant1 = "item_u1", "resp_1", "item_a1"
    log.user_speech(item_id=user1, started=100.0, stopped=1000.0)
    # The assistant talks from 1500 ms; the user speaks over it at 1800 ms; the response is cancelled.
    log.response(response_id=resp1, assistant_item=assistant1, created=1010.0, first_audio=1500.0,
                 deltas=4, delta_every=100.0, delta_ms=100.0, done=None)
    log.user_speech(item_id="item_u2", started=1850.0, stopped=2600.0)
    log.add(1860.0, "server", "response.done",
            {"response": {"id": resp1, "status": "cancelled"}})
    log.add(1870.0, "client", "conversation.item.truncate",
            {"item_id": assistant1, "content_index": 0, "audio_end_ms": 300})
    log.response(response_id="resp_2", assistant_item="item_a2", created=2610.0, first_audio=3100.0,
                 deltas=2, delta_every=100.0, delta_ms=100.0, done=3400.0)
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["turn_count"] == 2
    assert s["barge_in_count"] == 1
    first, second = s["turns"]
    assert (first["status"], first["barge_in"], first["truncated_audio_end_ms"]) == ("cancelled", True, 300)
    assert (second["status"], second["barge_in"]) == ("completed", False)
    assert second["user_item_ids"] == ["item_u2"]
    assert [t["speech_to_first_audio_ms"] for t in s["turns"]] == [500.0, 500.0]
    assert s["responses"] == {"total": 2, "by_status": {"cancelled": 1, "completed": 1}}


def test_a_response_an_upstream_drop_cut_is_failed_not_a_barge_in(tmp_path: Path) -> None:
    """The relay ends it for the client with its own `response.done` (dir relay, failed); speech after it is the
    next turn, not a barge-in. A hidden server-tool response's relay-logged `response.done` makes no turn."""
    log = SessionLog("sess_resumed")
    log.started()
    log.user_speech(item_id="item_u1", started=100.0, stopped=1000.0)
    log.response(response_id="resp_1", assistant_item="item_a1", created=1010.0, first_audio=1500.0,
                 deltas=2, delta_every=100.0, delta_ms=100.0, done=None)
    failed = {"status": "failed", "status_details": {"type": "failed", "error": {"code": "upstream_interrupted"}}}
    log.add(1700.0, "relay", "response.done", {"response": {"id": "resp_1", **failed}})
    log.add(1800.0, "relay", "response.done", {"response": {"id": "resp_hidden_tool", "status": "completed"}})
    log.user_speech(item_id="item_u2", started=2000.0, stopped=2600.0)
    log.response(response_id="resp_2", assistant_item="item_a2", created=2610.0, first_audio=3100.0,
                 deltas=2, delta_every=100.0, delta_ms=100.0, done=3400.0)
    log.write(tmp_path)
    s = only_session(tmp_path)
    first, second = s["turns"]
    assert (first["status"], first["barge_in"], first["response_done_ms"]) == ("failed", False, 1700.0)
    assert second["status"] == "completed"
    assert s["barge_in_count"] == 0
    assert s["responses"] == {"total": 2, "by_status": {"failed": 1, "completed": 1}}


def test_a_response_without_user_input_is_a_turn_without_user_items(tmp_path: Path) -> None:
    log = SessionLog("sess_greeting")
    log.add(10.0, "client", "response.create", {})
    log.response(response_id="resp_1", assistant_item="item_a1", created=20.0, first_audio=300.0,
                 deltas=1, delta_every=10.0, delta_ms=10.0, done=400.0)
    log.write(tmp_path)
    (turn,) = only_session(tmp_path)["turns"]
    assert (turn["user_item_ids"], turn["response_id"], turn["request_to_done_ms"]) == ([], "resp_1", 390.0)


def test_user_speech_that_never_got_a_response_is_a_turn_without_a_response(tmp_path: Path) -> None:
    log = SessionLog("sess_unanswered")
    log.user_speech(item_id="item_u1", started=100.0, stopped=900.0)
    log.ended(1000.0)
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["turn_count"] == 1
    assert (s["turns"][0]["user_item_ids"], s["turns"][0]["response_id"]) == (["item_u1"], None)
    assert s["responses"]["total"] == 0


def test_a_text_message_from_the_client_is_a_text_turn(tmp_path: Path) -> None:
    log = SessionLog("sess_text")
    log.add(100.0, "server", "conversation.item.added",
            {"item": {"id": "item_t1", "type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": "what time is it"}]}})
    log.add(110.0, "client", "response.create", {})
    log.response(response_id="resp_1", assistant_item="item_a1", created=120.0, first_audio=None, deltas=0,
                 delta_every=1.0, delta_ms=1.0, done=500.0)
    log.write(tmp_path)
    (turn,) = only_session(tmp_path)["turns"]
    assert (turn["input"], turn["user_transcript"], turn["user_item_ids"]) == ("text", "what time is it",
                                                                                ["item_t1"])


def test_retrieve_round_trips_are_measured_from_the_relay_retrieve_to_its_answer(tmp_path: Path) -> None:
    log = SessionLog("sess_retrieve")
    log.relay_retrieve(1000.0, "item_a1")
    log.relay_retrieve(1001.0, "item_u1")
    log.relay_retrieved(1040.0, "item_u1")
    log.relay_retrieved(1100.0, "item_a1")
    log.relay_retrieve(2000.0, "item_a2")
    log.relay_retrieve_error(2020.0, "item_a2")
    log.retrieve_failed(2021.0, "item_a2", "error", {"code": "item_not_found", "message": "no such item"})
    log.relay_retrieve(3000.0, "item_a3")
    log.retrieve_failed(13000.0, "item_a3", "timeout")
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert [(r["item_id"], r["result"], r["round_trip_ms"]) for r in s["retrieves"]["items"]] == [
        ("item_a1", "retrieved", 100.0),
        ("item_u1", "retrieved", 39.0),
        ("item_a2", "error", 20.0),
        ("item_a3", "timeout", None),
    ]
    assert s["retrieves"]["by_result"] == {"error": 1, "retrieved": 2, "timeout": 1}
    assert s["latency_ms"]["retrieve_round_trip"] == {"count": 3, "p50": 39.0, "p95": 100.0, "max": 100.0}


def test_errors_list_server_errors_client_errors_and_failed_retrieves(tmp_path: Path) -> None:
    log = SessionLog("sess_errors")
    log.server_error(100.0, "invalid_value", "bad type", event_id="evt_9")
    log.client_error(200.0, "invalid_json")
    log.relay_retrieve(300.0, "item_a1")
    log.retrieve_failed(1300.0, "item_a1", "session_closed")
    log.write(tmp_path)
    s = only_session(tmp_path)
    assert s["error_count"] == 3
    assert [(e["kind"], e["code"], e["t_ms"]) for e in s["errors"]] == [
        ("server_error", "invalid_value", 100.0),
        ("client_error", "invalid_json", 200.0),
        ("retrieve_failed", "session_closed", 1300.0),
    ]
    assert s["errors"][0]["event_id"] == "evt_9"
    assert s["errors"][2]["item_id"] == "item_a1"


def test_saved_audio_is_listed_with_its_path_and_source(tmp_path: Path) -> None:
    two_turn_session("sess_saved").write(tmp_path)
    (saved,) = only_session(tmp_path)["audio_saved"]
    assert saved["item_id"] == "item_a1"
    assert saved["path"] == "data/sessions/sess_saved/item_a1.wav"
    assert (saved["source"], saved["rate"], saved["duration_ms"]) == ("retrieved", 24000, 500.0)


def test_log_gaps_and_dropped_records_are_reported_and_explained_gaps_are_not_missing(tmp_path: Path) -> None:
    log = SessionLog("sess_gap")
    for i in range(10):
        log.add(float(i * 10), "server", "some.event", {})
    log.finished()
    del log.records[3:6]  # seq 4..6 never reached the disk
    log.records.insert(3, {**log.records[2], "seq": None, "type": "relay.log_gap", "dir": "relay",
                           "event": {"type": "relay.log_gap", "from_seq": 4, "to_seq": 6, "reason": "disk"}})
    log.records.append({**log.records[-1], "seq": 11, "type": "relay.session_ended", "dir": "relay",
                        "event": {"reason": "client_closed", "log_dropped": 3, "client_close_code": 1000,
                                  "upstream_close_code": 1000, "counts": {}}})
    path = log.path_in(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in log.records))
    s = only_session(tmp_path)
    assert [(g["from_seq"], g["to_seq"], g["reason"]) for g in s["log"]["gaps"]] == [(4, 6, "disk")]
    assert s["log"]["dropped"] == 3
    assert s["log"]["missing_seq"] == 0


def test_seqs_missing_without_a_log_gap_are_counted(tmp_path: Path) -> None:
    log = two_turn_session("sess_holes")
    lines = log.lines()
    path = log.path_in(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for i, line in enumerate(lines) if i not in (5, 6, 20)))
    assert only_session(tmp_path)["log"]["missing_seq"] == 3


def test_files_of_one_session_in_several_places_are_merged_by_seq(tmp_path: Path) -> None:
    log = two_turn_session("sess_split")
    lines = log.lines()
    whole = tmp_path / "whole"
    log.write(whole)
    split = tmp_path / "split"
    half = len(lines) // 2
    # The later half sorts first by path, so only a merge by seq can restore the order.
    (split / "a").mkdir(parents=True)
    (split / "a" / "sess_split.jsonl").write_text("".join(line + "\n" for line in lines[half:]))
    (split / "b").mkdir(parents=True)
    (split / "b" / "sess_split.jsonl").write_text("".join(line + "\n" for line in lines[:half]))
    merged = only_session(split)
    expected = only_session(whole)
    for key in ("turns", "latency_ms", "events", "event_types", "audio_s", "retrieves", "errors"):
        assert merged[key] == expected[key], key
    assert merged["log"]["missing_seq"] == 0


def test_a_duplicated_log_file_counts_each_record_once(tmp_path: Path) -> None:
    log = two_turn_session("sess_dup")
    path = log.write(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two" / "copy")
    single = only_session(tmp_path / "one")
    doubled = only_session(tmp_path)
    assert doubled["events"] == single["events"]
    assert doubled["turns"] == single["turns"]
    assert doubled["log"]["duplicate_seq"] == len(log.records)
    assert len(doubled["files"]) == 2 and str(path) in doubled["files"]


def test_sessions_in_a_directory_are_summarized_separately_and_filtered_by_id(tmp_path: Path) -> None:
    two_turn_session("sess_one").write(tmp_path)
    other = SessionLog("sess_other")
    other.voice_turn(n=1, speech_started=10.0, speech_stopped=200.0, first_audio=450.0)
    other.write(tmp_path)
    result = summarize(tmp_path)
    assert sorted(s["session_id"] for s in result.sessions) == ["sess_one", "sess_other"]
    assert only_session(tmp_path, "sess_other")["turns"][0]["speech_to_first_audio_ms"] == 250.0


def test_a_file_holding_several_interleaved_sessions_is_split_by_session_id(tmp_path: Path) -> None:
    a, b = two_turn_session("sess_x"), two_turn_session("sess_y")
    lines = [line for pair in zip(a.lines(), b.lines(), strict=True) for line in pair]
    (tmp_path / "stdout.jsonl").write_text("".join(line + "\n" for line in lines))
    result = summarize(tmp_path)
    assert [s["session_id"] for s in result.sessions] == ["sess_x", "sess_y"]
    assert all(s["turn_count"] == 2 for s in result.sessions)
    assert only_session(tmp_path, "sess_y")["latency_ms"] == result.sessions[1]["latency_ms"]


def test_percentiles_use_the_nearest_rank() -> None:
    assert percentiles([4.0, 1.0, 3.0, 2.0]) == {"count": 4, "p50": 2.0, "p95": 4.0, "max": 4.0}
    samples = [float(i) for i in range(1, 101)]
    assert percentiles(samples) == {"count": 100, "p50": 50.0, "p95": 95.0, "max": 100.0}
    assert percentiles([7.25]) == {"count": 1, "p50": 7.25, "p95": 7.25, "max": 7.25}


def test_an_upstream_frame_logged_with_a_null_type_is_counted_not_skipped(tmp_path: Path) -> None:
    log = SessionLog("sess_null_type")
    record = log.add(100.0, "server", "placeholder", {"invalid_json": True, "text": "{oops"})
    record["type"] = None
    log.write(tmp_path)
    result = summarize(tmp_path)
    assert result.warnings.total == 0
    assert result.sessions[0]["event_types"]["server"] == {"(no type)": 1}
