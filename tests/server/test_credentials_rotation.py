"""Upstream credentials and the model they imply (docs/configuration.md, docs/forwarding.md), and `serve` when they are incomplete.

Pure checks of `relay.credentials` with an explicit environment, then a real relay in front of the real
simulator on 127.0.0.1 (credentials come from the process environment there, as in production).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from relay.credentials import Credentials, resolve_model
from relay.errors import ConfigError
from relay.server.app import STATE, create_app
from relay.settings import DEFAULT_MODEL_NAME, Settings, load_settings
from tests.support.conversations_fixtures import serving
from tests.support.relay_fixtures import relay_settings, running_relay
from tests.support.timing import seconds

BOTH = {"YANDEX_API_KEY": "AQV-the-key", "YANDEX_IAM_TOKEN": "t1.the-iam-token"}


def test_iam_token_wins_over_api_key_when_both_are_in_the_environment() -> None:
    credentials = Credentials.load(Settings(), environ=BOTH)
    assert credentials.authorization_header() == {"Authorization": "Bearer t1.the-iam-token"}


def test_iam_token_wins_over_api_key_when_both_are_in_the_credentials_file(tmp_path: Path) -> None:
    file = tmp_path / "creds.env"
    # The key comes last, so "the last line wins" would pick it; only the IAM-first rule picks the token.
    file.write_text("YANDEX_IAM_TOKEN=t1.from-file\nYANDEX_API_KEY=AQV-from-file\n", encoding="utf-8")
    settings = load_settings(flags={"credentials_file": str(file)}, env={}).settings
    credentials = Credentials.load(settings, environ={})
    assert credentials.authorization_header() == {"Authorization": "Bearer t1.from-file"}


def test_an_api_key_in_the_file_does_not_beat_an_iam_token_in_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "creds.env"
    file.write_text("YANDEX_API_KEY=AQV-from-file\n", encoding="utf-8")
    settings = load_settings(flags={"credentials_file": str(file)}, env={}).settings
    credentials = Credentials.load(settings, environ={"YANDEX_IAM_TOKEN": "t1.from-env"})
    assert credentials.authorization_header() == {"Authorization": "Bearer t1.from-env"}


def test_credentials_without_a_folder_and_no_model_are_a_config_error_naming_the_folder() -> None:
    credentials = Credentials.load(Settings(), environ={"YANDEX_API_KEY": "AQV-the-key"})
    with pytest.raises(ConfigError) as raised:
        resolve_model(Settings(), credentials)
    assert raised.value.setting == "model"
    assert "YANDEX_FOLDER_ID" in str(raised.value)
    assert "AQV-the-key" not in str(raised.value)


def test_credentials_without_a_folder_and_a_configured_model_use_that_model() -> None:
    credentials = Credentials.load(Settings(), environ={"YANDEX_API_KEY": "AQV-the-key"})
    assert resolve_model(Settings(model="gpt://b1g/speech-x"), credentials) == "gpt://b1g/speech-x"


def test_no_credentials_and_no_folder_keep_the_folderless_default() -> None:
    # A keyless OpenAI-compatible server (or a simulator) is not asked for a folder.
    assert resolve_model(Settings(), Credentials.load(Settings(), environ={})) == f"gpt:///{DEFAULT_MODEL_NAME}"


async def test_serve_with_a_key_but_no_folder_tells_the_client_and_opens_no_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YANDEX_API_KEY", "AQV-the-key")
    monkeypatch.delenv("YANDEX_IAM_TOKEN", raising=False)
    monkeypatch.delenv("YANDEX_FOLDER_ID", raising=False)
    async with running_relay(tmp_path) as relay, aiohttp.ClientSession() as http:
        async with http.ws_connect(relay.ws_url) as ws:
            error = await ws.receive_json(timeout=seconds(5))
            closed = await ws.receive(timeout=seconds(5))
        assert relay.sim_handshakes == 0
    assert error["type"] == "error" and error["error"]["code"] == "upstream_unavailable"
    assert "YANDEX_FOLDER_ID" in error["error"]["message"]
    assert "AQV-the-key" not in error["error"]["message"]
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1013


async def test_serve_against_the_embedded_simulator_needs_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YANDEX_API_KEY", "AQV-the-key")
    monkeypatch.delenv("YANDEX_FOLDER_ID", raising=False)
    app = create_app(relay_settings(tmp_path, "sim"))
    async with serving(app) as root, aiohttp.ClientSession() as http:
        async with http.ws_connect(root.replace("http://", "ws://") + "/v1/realtime") as ws:
            first = await ws.receive_json(timeout=seconds(5))
        async with asyncio.timeout(seconds(5)):
            await app[STATE].no_sessions.wait()
    assert first["type"] == "session.created"


def test_a_blank_or_padded_key_in_the_environment_is_read_as_the_file_reads_it() -> None:
    assert not Credentials.load(Settings(), environ={"YANDEX_API_KEY": "  ", "YANDEX_IAM_TOKEN": "\n"}).present
    padded = Credentials.load(Settings(), environ={"YANDEX_API_KEY": " AQV-the-key\n"})
    assert padded.authorization_header() == {"Authorization": "Api-Key AQV-the-key"}


async def test_a_credentials_file_gone_bad_while_serving_gives_the_rest_client_a_plain_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("YANDEX_API_KEY", "YANDEX_IAM_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    file = tmp_path / "creds.env"
    file.write_text("YANDEX_API_KEY=AQV-from-file\nYANDEX_FOLDER_ID=b1g\n", encoding="utf-8")
    async with running_relay(tmp_path, settings={"credentials_file": str(file)}) as relay:
        file.write_text("YANDEX_API_KEY=AQV-from-file\nthis line is no pair\n", encoding="utf-8")  # edited in place
        async with aiohttp.ClientSession() as http, http.get(f"{relay.base_url}/v1/conversations/conv_x/items") as answer:
            body = await answer.json()
    assert answer.status == 500
    assert body["error"]["code"] == "upstream_credentials_unusable"
    assert str(file) not in body["error"]["message"] and "AQV" not in body["error"]["message"]
