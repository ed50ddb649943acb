"""`realtime-relay sim` as a process: it logs where it listens, serves, and stops on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support.sim_fixtures import connect
from tests.support.timing import seconds


async def start_sim(*args: str) -> tuple[asyncio.subprocess.Process, dict]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("RELAY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "sim",
        "--port",
        "0",
        "--log-format",
        "json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=seconds(20))
    return process, json.loads(line)


@pytest.mark.parametrize(("flavour", "sig"), [("yandex", signal.SIGTERM), ("openai", signal.SIGINT)])
async def test_sim_command_serves_until_signalled(flavour: str, sig: signal.Signals) -> None:
    process, first_record = await start_sim("--flavour", flavour, "--speed", "0")
    try:
        assert first_record["msg"] == "sim.listening"
        assert first_record["port"] > 0 and first_record["flavour"] == flavour
        async with connect(first_record["realtime_url"], flavour) as client:
            assert (await client.recv())["type"] == "session.created"
    finally:
        process.send_signal(sig)
        code = await asyncio.wait_for(process.wait(), timeout=seconds(20))
    assert code == 0


async def test_sim_command_requires_the_api_key_it_was_given() -> None:
    import aiohttp

    process, first_record = await start_sim("--api-key", "k1")
    try:
        assert first_record["auth"] is True and "k1" not in json.dumps(first_record)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(first_record["realtime_url"])
            assert refused.value.status == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=seconds(20)) == 0


@pytest.mark.parametrize("args", [["--flavour", "azure"], ["--speed", "-1"], ["--port", "99999"], ["--port", "x"]])
def test_sim_command_rejects_bad_options_with_exit_2(args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "sim", *args], capture_output=True, text=True, timeout=seconds(30), env=env
    )
    assert result.returncode == 2, result.stderr


@pytest.mark.parametrize("where", ["flag", "env"])
def test_an_empty_sim_api_key_is_a_config_error_not_an_open_simulator(where: str) -> None:
    """A template that left the key empty must not start a simulator without auth; the error reads whole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    args = ["--api-key", ""] if where == "flag" else []
    if where == "env":
        env["RELAY_SIM_API_KEY"] = ""
    result = subprocess.run(
        [sys.executable, "-m", "relay", "sim", "--port", "0", *args],
        capture_output=True, text=True, timeout=seconds(30), env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "'sim_api_key'" in result.stderr and "an empty string is not a key" in result.stderr


async def test_sim_command_reports_a_port_in_use_with_exit_1() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "sim",
            "--port",
            str(port),
            "--log-format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        code = await asyncio.wait_for(process.wait(), timeout=seconds(20))
        assert code == 1
    finally:
        server.close()
        await server.wait_closed()
