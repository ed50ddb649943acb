"""The benchmark cannot rot: a tiny `python -m bench --quick` run against a real relay and the real echo upstream
prints one well-formed JSON document with the expected keys (no timing is asserted: figures are `make bench`'s).
Plus the benchmark's own inputs fed garbage: a bad load-generator spec, a bad CLI flag, a bad frame, a request
that is not a WebSocket upgrade.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import frames, table
from bench.echo import EchoConnection

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str, timeout: float = 110.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(120)
def test_quick_bench_prints_one_json_document_with_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = run_module("bench", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(out.read_text()) == report
    for key in ("machine", "layout", "workload", "direct", "relay", "memory", "capacity", "summary", "targets", "notes"):
        assert key in report, key
    assert {"cpu_model", "cpus_online", "python", "packages"} <= report["machine"].keys()
    assert {"relay_core", "echo_upstream_core", "load_generator_core"} <= report["layout"].keys()
    assert {"files", "off"} <= report["relay"].keys()
    files = report["relay"]["files"]
    for key in ("added_latency_ms", "flood_ratio_to_direct", "relay_cpu_percent", "sweep", "command"):
        assert key in files, key
    assert {"p50", "p99", "max"} <= files["added_latency_ms"].keys()
    assert files["latency"]["sessions_connected"] == files["latency"]["sessions_requested"]
    assert files["latency"]["received"] > 0
    assert {"idle_per_session_kib", "active_per_session_kib"} <= report["memory"].keys()
    for name in ("added_latency_p50", "added_latency_p99", "cpu_at_200_sessions", "sessions_per_core", "flood_ratio",
                 "idle_session_rss"):  # fmt: skip
        assert {"target", "measured", "met"} <= report["targets"][name].keys(), name
    assert "| added_latency_p50 |" in table.render(report)
    for name in ("cpu_at_200_vs_reference", "flood_vs_reference", "p99_at_100_sessions", "rss_at_200_streaming"):
        assert {"target", "measured", "met"} <= report["targets"][name].keys(), name
    assert {"reference", "splice_floor"} <= report["peers"].keys()
    # The targets against the reference are judged on interleaved rounds, each side measured in every round.
    (round_,) = report["head_to_head"]["rounds"]
    assert round_["order"] == ["files", "reference"]
    for side in ("files", "reference"):
        assert round_[side]["flood_round_trips_per_s"] > 0, side
        assert report["head_to_head"]["median"][side]["cpu_us_per_round_trip"] is not None, side
    assert report["targets"]["flood_vs_reference"]["measured"] == report["head_to_head"]["median"]["files"]["flood_round_trips_per_s"]
    assert report["peers"]["reference"]["latency"]["received"] > 0, "the reference relay relayed"
    assert {"direct", "reference (peer)", "splice_floor (peer)", "relay, files"} <= report["comparison"].keys()
    assert report["memory"]["streaming_rss_mib"] > 0


def test_table_refuses_a_file_that_is_not_a_benchmark_result(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"machine": 1}))
    done = run_module("bench.table", str(bogus), timeout=30)
    assert done.returncode == 2
    assert "not a benchmark result" in done.stderr


def test_load_generator_refuses_a_spec_that_is_not_json() -> None:
    done = run_module("bench.loadgen", "{not json", timeout=30)
    assert done.returncode == 2
    assert "bad spec" in done.stderr


def test_load_generator_refuses_a_spec_without_its_keys() -> None:
    done = run_module("bench.loadgen", json.dumps({"mode": "realtime"}), timeout=30)
    assert done.returncode == 2


def test_bench_cli_refuses_an_unknown_flag() -> None:
    done = run_module("bench", "--no-such-flag", timeout=30)
    assert done.returncode == 2


def test_frame_reader_rejects_reserved_bits() -> None:
    with pytest.raises(frames.ProtocolError):
        frames.FrameReader().feed(b"\xf1\x00")


def test_frame_reader_reassembles_fragments_and_unmasks() -> None:
    reader = frames.FrameReader()
    first = bytes((0x01, 0x80 | 3)) + b"\x01\x02\x03\x04" + frames.unmask(b"abc", b"\x01\x02\x03\x04")
    last = frames.encode_frame(b"def", frames.OP_CONT, masked=True)
    assert reader.feed(first) == []
    assert reader.feed(last[:3]) == []
    assert reader.feed(last[3:]) == [frames.Frame(frames.OP_TEXT, b"abcdef")]


async def test_echo_answers_a_request_that_is_not_an_upgrade_with_400() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoConnection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_echo_answers_an_append_with_a_delta_of_the_same_audio() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoConnection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request, accept = frames.client_handshake("127.0.0.1", port, "/v1/realtime")
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        frames.check_client_response(head[:-4], accept)
        decoder = frames.FrameReader()
        received: list[frames.Frame] = []
        writer.write(frames.encode_frame(b'{"type":"input_audio_buffer.append","audio":"AAAA"}', masked=True))
        while len(received) < 2:
            received += decoder.feed(await asyncio.wait_for(reader.read(65536), 10))
        created, delta = (json.loads(f.payload) for f in received[:2])
        assert created["type"] == "session.created"
        assert delta["type"] == "response.output_audio.delta"
        assert delta["delta"] == "AAAA"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_ab_refuses_a_phase_it_does_not_have() -> None:
    done = run_module("bench.ab", "--a", "HEAD", "--phases", "flood,warp", timeout=30)
    assert done.returncode == 2
    assert "--phases takes top, mid and flood (got warp)" in done.stderr
