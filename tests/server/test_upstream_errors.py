"""`serve`'s upstream URL, model and connect rules end to end (docs/forwarding.md, docs/lifecycle.md, README.md).

A real relay app in front of the real simulator on 127.0.0.1; the simulator's `HandshakeCounter.paths` is the
exact path and query the relay's upstream socket asked for, and `relay.session_started` in the session's event
log is what the relay recorded. The embedded simulator (`upstream = "sim"`) is the relay's own, started by
the app. Upstream credentials come from the process environment, as in production, so each test sets them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from relay.errors import ConfigError
from relay.server.app import STATE, RelayState, create_app
from relay.settings import DEFAULT_MODEL_NAME
from tests.support.conversations_fixtures import serving
from tests.support.relay_fixtures import RunningRelay, relay_settings, running_relay, running_relay_process
from tests.support.timing import seconds

FOLDER = "b1gtestfolder"
DEFAULT_MODEL = f"gpt://{FOLDER}/{DEFAULT_MODEL_NAME}"


@pytest.fixture(autouse=True)
def folder_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder id and no key: the relay builds Yandex's model URI, the simulator needs no credentials."""
    monkeypatch.setenv("YANDEX_FOLDER_ID", FOLDER)
    monkeypatch.delenv("YANDEX_API_KEY", raising=False)
    monkeypatch.delenv("YANDEX_IAM_TOKEN", raising=False)


def query_of(path_qs: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(path_qs).query, keep_blank_values=True)


async def one_session(state: RelayState, ws_url: str, query: str = "") -> list[dict[str, Any]]:
    """Open a session with `query`, read session.created, leave; the first events the client received."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url + query) as ws:
        first = await ws.receive_json(timeout=seconds(5))
    # The bridge is in `bridges` before any upstream event reaches the client; it leaves once its log is closed.
    async with asyncio.timeout(seconds(5)):
        await state.no_sessions.wait()
    return [first]


def session_started(log_dir: Path) -> dict[str, Any]:
    """The `relay.session_started` record of the only session logged under `log_dir`."""
    import json

    files = sorted(log_dir.glob("*/*.jsonl"))
    assert len(files) == 1
    records = [json.loads(line) for line in files[0].read_bytes().split(b"\n") if line]
    started = [r for r in records if r["type"] == "relay.session_started"]
    assert len(started) == 1
    event: dict[str, Any] = started[0]["event"]
    return event


async def upstream_query(relay: RunningRelay, query: str) -> list[tuple[str, str]]:
    events = await one_session(relay.state, relay.ws_url, query)
    assert events[0]["type"] == "session.created"
    assert len(relay.handshakes.paths) == 1
    return query_of(relay.handshakes.paths[0])


# ---- docs/forwarding.md: model ---------------------------------------------------------------------------------------------


async def test_the_clients_model_is_ignored_and_logged_as_client_model(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        query = await upstream_query(relay, "?model=gpt-realtime")
    assert [v for k, v in query if k == "model"] == [DEFAULT_MODEL]
    assert session_started(relay.log_dir)["client_model"] == "gpt-realtime"


async def test_with_allow_client_model_a_gpt_uri_is_used_as_given(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allow_client_model": "true"}) as relay:
        query = await upstream_query(relay, "?model=gpt://otherfolder/speech-x")
    assert [v for k, v in query if k == "model"] == ["gpt://otherfolder/speech-x"]


async def test_with_allow_client_model_a_bare_name_is_qualified_with_the_folder(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allow_client_model": "true"}) as relay:
        query = await upstream_query(relay, "?model=speech-x")
    assert [v for k, v in query if k == "model"] == [f"gpt://{FOLDER}/speech-x"]


async def test_with_allow_client_model_and_no_client_model_the_configured_one_is_used(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"allow_client_model": "true", "model": "my-model"}) as relay:
        query = await upstream_query(relay, "")
    assert [v for k, v in query if k == "model"] == [f"gpt://{FOLDER}/my-model"]


# ---- docs/forwarding.md: query parameters ----------------------------------------------------------------------------------


async def test_only_listed_client_query_parameters_reach_the_upstream(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"forward_query_params": "voice,lang"}) as relay:
        query = await upstream_query(relay, "?voice=alena&lang=ru&secret=nope&model=ignored")
    assert ("voice", "alena") in query and ("lang", "ru") in query
    assert "secret" not in dict(query)
    assert [v for k, v in query if k == "model"] == [DEFAULT_MODEL]


async def test_by_default_conversation_id_reaches_the_upstream_and_nothing_else_does(tmp_path: Path) -> None:
    async with running_relay(tmp_path) as relay:
        # The simulator knows no conversation conv_42 and refuses it: what matters is that it was asked.
        await one_session(relay.state, relay.ws_url, "?conversation_id=conv_42&voice=alena")
        (path,) = relay.handshakes.paths
        query = query_of(path)
    assert [v for k, v in query if k == "conversation_id"] == ["conv_42"]
    assert "voice" not in dict(query)


async def test_relay_events_never_reaches_the_upstream_even_when_listed(tmp_path: Path) -> None:
    async with running_relay(tmp_path, settings={"forward_query_params": "relay_events,voice"}) as relay:
        query = await upstream_query(relay, "?relay_events=1&voice=alena")
    assert "relay_events" not in dict(query)
    assert ("voice", "alena") in query


async def test_the_configured_upstream_url_keeps_its_own_query_and_only_model_is_replaced(tmp_path: Path) -> None:
    async with running_relay(tmp_path, upstream_query="tenant=t1&model=configured-in-url") as relay:
        query = await upstream_query(relay, "?tenant=client-t2")
    assert [v for k, v in query if k == "tenant"] == ["t1"]
    assert [v for k, v in query if k == "model"] == [DEFAULT_MODEL]


# ---- the embedded simulator (`upstream = "sim"`) -------------------------------------------------------------


@asynccontextmanager
async def embedded_relay(tmp_path: Path, settings: Mapping[str, Any] | None = None) -> AsyncIterator[tuple[RelayState, str]]:
    app = create_app(relay_settings(tmp_path, "sim", settings))
    async with serving(app) as root:
        yield app[STATE], root.replace("http://", "ws://") + "/v1/realtime"


async def test_the_embedded_simulator_gets_no_client_model_unless_allowed(tmp_path: Path) -> None:
    async with embedded_relay(tmp_path) as (state, ws_url):
        events = await one_session(state, ws_url, "?model=client-choice")
    assert events[0]["type"] == "session.created"
    started = session_started(tmp_path / "logs")
    assert dict(query_of(started["upstream_url"]))["model"] == "sim"
    assert started["client_model"] == "client-choice"


async def test_sim_knobs_reach_the_embedded_simulator(tmp_path: Path) -> None:
    async with embedded_relay(tmp_path, {"sim_knobs": {"refuse": 429}}) as (state, ws_url):
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            error = await ws.receive_json(timeout=seconds(5))
            closed = await ws.receive(timeout=seconds(5))
    assert error["type"] == "error"
    assert error["error"]["code"] == "upstream_unavailable" and "429" in error["error"]["message"]
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1013
    assert state.bridges == set()


async def test_a_sim_api_key_meant_for_the_sim_command_does_not_lock_serve_out_of_its_own_simulator(tmp_path: Path) -> None:
    # One config shared by `sim` and `serve`: the key is the `sim` command's; the embedded simulator asks none.
    async with embedded_relay(tmp_path, {"sim_api_key": "only-for-the-sim-command"}) as (state, ws_url):
        events = await one_session(state, ws_url)
        async with aiohttp.ClientSession() as http:
            async with http.get(ws_url.replace("ws://", "http://").replace("/realtime", "/conversations/c1/items")) as r:
                status = r.status
    assert events[0]["type"] == "session.created"
    assert status != 401


def test_a_bad_sim_knob_is_a_config_error_naming_sim_knobs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(relay_settings(tmp_path, "sim", {"sim_knobs": {"refuse": "sometimes"}}))
    assert raised.value.setting == "sim_knobs"


async def test_serve_with_a_bad_sim_knob_exits_2_naming_sim_knobs(tmp_path: Path) -> None:
    env = {"RELAY_SIM_KNOBS": '{"close_after": 0}'}
    async with running_relay_process(tmp_path, env=env, wait_listening=False) as proc:
        code = await proc.wait(timeout=seconds(20))
        assert proc.process.stderr is not None
        stderr = (await proc.process.stderr.read()).decode()
    assert code == 2
    assert "sim_knobs" in stderr + b"".join(proc.raw_stdout).decode()


# ---- docs/lifecycle.md: upstream_connect_timeout_seconds -----------------------------------------------------------------


@asynccontextmanager
async def silent_upstream() -> AsyncIterator[str]:
    """A TCP server that accepts, reads, and never answers the WebSocket handshake."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_upstream_that_never_answers_the_handshake_gives_upstream_unavailable_after_the_timeout(
    tmp_path: Path,
) -> None:
    async with silent_upstream() as url:
        app = create_app(relay_settings(tmp_path, url, {"upstream_connect_timeout_seconds": "0.5"}))
        async with serving(app) as root, aiohttp.ClientSession() as http:
            # Well under the default 10 s: the setting, not the default, ended the wait.
            async with asyncio.timeout(seconds(5)), http.ws_connect(root + "/v1/realtime") as ws:
                error = await ws.receive_json()
                closed = await ws.receive()
    assert error["type"] == "error" and error["error"]["code"] == "upstream_unavailable"
    assert "0.5 s" in error["error"]["message"]
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1013


async def test_a_refused_handshake_is_logged_with_the_upstream_status(tmp_path: Path) -> None:
    # Through the installed command: `sim_knobs` from the environment make the embedded simulator refuse (docs/forwarding.md, README.md).
    async with running_relay_process(tmp_path, env={"RELAY_SIM_KNOBS": '{"refuse": 429}'}) as proc:
        async with aiohttp.ClientSession() as http, http.ws_connect(proc.ws_url) as ws:
            error = await ws.receive_json(timeout=seconds(5))
        record = await proc.wait_for_log("relay.upstream_unavailable", timeout=seconds(10))
    assert error["error"]["code"] == "upstream_unavailable" and "429" in error["error"]["message"]
    assert record["status"] == 429
