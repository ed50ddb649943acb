"""deploy/nginx/realtime-relay.conf (deploy/README.md), checked with the real nginx.

`nginx -t` tests the site as shipped (only its certificate and log paths moved to a temporary directory, with a
self-signed certificate made by openssl). Then the same site runs for real: its listeners moved to free loopback
ports and its upstream pointed at a `realtime-relay serve --upstream sim` subprocess, and WebSocket sessions,
tokens, health routes and the body limit are exercised through it over TLS that the client verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import tiers
from tests.support.deploy_fixtures import (
    NGINX_SITE,
    free_port,
    http_status,
    output_tail,
    relay_command,
    relay_env,
    running,
    wait_until_answering,
)
from tests.support.relay_fixtures import mint_client_token
from tests.support.timing import seconds
from tests.support.tls import self_signed_certificate

pytestmark = pytest.mark.deploy

STATIC_TOKEN = "deploy-static-token"
SHIPPED_CERT = "/etc/ssl/realtime-relay/fullchain.pem"
SHIPPED_KEY = "/etc/ssl/realtime-relay/privkey.pem"
SHIPPED_LOG_DIR = "/var/log/nginx/"
SHIPPED_RELAY = "server 127.0.0.1:8080;"


def nginx() -> str:
    return tiers.require("/usr/sbin/nginx", "nginx is not installed (apt-get install nginx-light)")


def replace_exactly(text: str, old: str, new: str) -> str:
    """str.replace that fails when the shipped site no longer has `old` (the test must follow the site)."""
    assert old in text, f"the site no longer contains {old!r}; update tests/deploy/test_nginx.py"
    return text.replace(old, new)


def site_with_local_paths(directory: Path, cert: Path, key: Path) -> str:
    site = NGINX_SITE.read_text(encoding="utf-8")
    site = replace_exactly(site, SHIPPED_CERT, str(cert))
    site = replace_exactly(site, SHIPPED_KEY, str(key))
    return replace_exactly(site, SHIPPED_LOG_DIR, f"{directory}/")


def site_on_ports(site: str, http_port: int, https_port: int, *relay_ports: int) -> str:
    """Listeners on loopback ports (the IPv6 ones dropped: loopback here is 127.0.0.1), one upstream `server` line
    per relay (the README's "several relays on one host")."""
    site = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", site, flags=re.MULTILINE)
    site = replace_exactly(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = replace_exactly(site, "listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    return replace_exactly(site, SHIPPED_RELAY, " ".join(f"server 127.0.0.1:{port};" for port in relay_ports))


def main_config(directory: Path, site: Path) -> Path:
    """A minimal nginx.conf (like Debian's, everything under `directory`) that includes the site."""
    # As root nginx would switch its workers to `nobody`, who cannot enter pytest's 0700 temporary directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(
        f"    {name}_temp_path {directory / name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = directory / "nginx.conf"
    config.write_text(
        f"{user}worker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'};\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp_paths}    include {site};\n}}\n",
        encoding="utf-8",
    )
    return config


def nginx_test(config: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nginx(), "-t", "-p", f"{directory}/", "-c", str(config), "-e", str(directory / "error.log")],
        capture_output=True,
        text=True,
        timeout=seconds(60),
    )


def test_site_passes_nginx_config_test(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    site = tmp_path / "realtime-relay.conf"
    site.write_text(site_with_local_paths(tmp_path, cert, key), encoding="utf-8")
    result = nginx_test(main_config(tmp_path, site), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_config_test_reports_a_broken_site(tmp_path: Path) -> None:
    # The guard for the test above: nginx -t really parses the site.
    cert, key = self_signed_certificate(tmp_path)
    site = tmp_path / "realtime-relay.conf"
    broken = replace_exactly(site_with_local_paths(tmp_path, cert, key), "proxy_read_timeout 3600s;", "proxy_read_timeout;")
    site.write_text(broken, encoding="utf-8")
    result = nginx_test(main_config(tmp_path, site), tmp_path)
    assert result.returncode != 0
    assert "proxy_read_timeout" in result.stderr


# --------------------------------------------------------------------------------------- the real run


@dataclass(frozen=True)
class Stack:
    """nginx (the shipped site) in front of relay `behind`; relay `beside` shares its token secret."""

    http_port: int
    https_port: int
    behind_port: int
    beside_port: int
    tls: ssl.SSLContext

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/v1/realtime"


@contextlib.contextmanager
def relay_on(tmp: Path, port: int, secret: Path, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """`realtime-relay serve --upstream sim` with a static token and the shared token secret, answering /healthz."""
    env = relay_env(tmp, RELAY_CLIENT_TOKENS=STATIC_TOKEN, RELAY_TOKEN_SECRET_FILE=str(secret), RELAY_SIM_SPEED="0", **settings)
    output = tmp.with_suffix(".out")
    with running(relay_command("serve", "--upstream", "sim", "--port", str(port)), env, output) as process:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/healthz", process, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output_tail(output)}") from None
        yield process


@contextlib.contextmanager
def nginx_in_front_of(tmp: Path, *relay_ports: int) -> Iterator[tuple[int, int, ssl.SSLContext]]:
    """The shipped site on free loopback ports, proxying to relay_ports: (http port, https port, client TLS)."""
    http_port, https_port = free_port(), free_port()
    cert, key = self_signed_certificate(tmp)
    site = tmp / "realtime-relay.conf"
    site.write_text(site_on_ports(site_with_local_paths(tmp, cert, key), http_port, https_port, *relay_ports), encoding="utf-8")
    config = main_config(tmp, site)
    checked = nginx_test(config, tmp)
    assert checked.returncode == 0, checked.stderr
    tls = ssl.create_default_context(cafile=str(cert))
    command = [nginx(), "-p", f"{tmp}/", "-c", str(config), "-e", str(tmp / "error.log"), "-g", "daemon off;"]
    with running(command, os.environ, tmp / "nginx.out") as server:
        try:
            wait_until_answering(f"https://127.0.0.1:{https_port}/healthz", server, timeout=30, context=tls)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output_tail(tmp / 'error.log')}") from None
        yield http_port, https_port, tls


def shared_secret(tmp: Path) -> Path:
    secret = tmp / "token_secret"
    secret.write_text("a-shared-secret-for-every-replica-0123456789", encoding="utf-8")
    return secret


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx()
    tmp = tmp_path_factory.mktemp("nginx-stack")
    secret = shared_secret(tmp)
    behind_port, beside_port = free_port(), free_port()
    with (
        relay_on(tmp / "behind", behind_port, secret),
        relay_on(tmp / "beside", beside_port, secret),
        nginx_in_front_of(tmp, behind_port) as (http_port, https_port, tls),
    ):
        yield Stack(http_port, https_port, behind_port, beside_port, tls)


async def next_of_type(ws: ClientConnection, event_type: str) -> dict[str, object]:
    """The next server event of `event_type` (others, e.g. rate-limit updates, are passed over)."""
    async with asyncio.timeout(seconds(15)):
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == event_type:
                return dict(event)
            assert event.get("type") != "error", event


@pytest.mark.parametrize("path", ["", "/openai"])  # the older path one of Yandex's example clients uses
async def test_websocket_session_runs_end_to_end_through_nginx(stack: Stack, path: str) -> None:
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with connect(stack.wss + path, ssl=stack.tls, additional_headers=headers, open_timeout=seconds(15)) as ws:
        created = await next_of_type(ws, "session.created")
        assert created["session"]
        await ws.send(
            json.dumps({"type": "session.update", "event_id": "evt_deploy_1", "session": {"instructions": "Answer in one word."}})
        )
        updated = await next_of_type(ws, "session.updated")
        session = updated["session"]
        assert isinstance(session, dict) and session["instructions"] == "Answer in one word."


async def test_text_turn_streams_through_nginx(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with connect(stack.wss, ssl=stack.tls, additional_headers=headers, open_timeout=seconds(15)) as ws:
        await next_of_type(ws, "session.created")
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
                }
            )
        )
        await ws.send(json.dumps({"type": "response.create"}))
        done = await next_of_type(ws, "response.done")
        response = done["response"]
        assert isinstance(response, dict) and response["status"] == "completed"


async def test_websocket_upgrade_without_a_token_is_refused_through_nginx(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.wss, ssl=stack.tls, open_timeout=seconds(15)):
            pass
    assert refused.value.response.status_code == 401


async def test_token_minted_by_one_replica_opens_a_session_on_another_through_nginx(stack: Stack) -> None:
    # Minted directly at the replica beside, used through nginx on the replica behind: the shared secret is what
    # lets a load balancer send a browser's socket anywhere.
    minted = await asyncio.to_thread(mint_client_token, f"http://127.0.0.1:{stack.beside_port}", STATIC_TOKEN)
    subprotocols = ["realtime", f"openai-insecure-api-key.{minted}"]
    async with connect(stack.wss, ssl=stack.tls, subprotocols=subprotocols, open_timeout=seconds(15)) as ws:  # type: ignore[arg-type]
        await next_of_type(ws, "session.created")


async def test_live_session_shows_in_metrics_through_nginx(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with connect(stack.wss, ssl=stack.tls, additional_headers=headers, open_timeout=seconds(15)) as ws:
        await next_of_type(ws, "session.created")
        text = await asyncio.to_thread(fetch_text, f"{stack.https}/metrics", stack.tls)
    assert re.search(r"^relay_active_sessions 1(\.0)?$", text, re.MULTILINE), text[:2000]




def fetch_text(url: str, tls: ssl.SSLContext) -> str:
    with urllib.request.urlopen(url, timeout=seconds(10), context=tls) as response:
        return str(response.read().decode())


def test_health_and_readiness_pass_through_nginx(stack: Stack) -> None:
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"{stack.https}{path}", timeout=seconds(10), context=stack.tls) as response:
            assert response.status == 200, path


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=seconds(10))
    connection.request("GET", "/v1/conversations?limit=5")
    response = connection.getresponse()
    assert response.status == 308
    assert response.getheader("Location") == "https://127.0.0.1/v1/conversations?limit=5"
    connection.close()


def test_rest_body_over_the_limit_is_refused_by_nginx(stack: Stack) -> None:
    connection = http.client.HTTPSConnection("127.0.0.1", stack.https_port, timeout=seconds(10), context=stack.tls)
    # Declared length over client_max_body_size (64m): nginx answers 413 from the header, before any body.
    connection.putrequest("POST", "/v1/conversations")
    connection.putheader("Authorization", f"Bearer {STATIC_TOKEN}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(65 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    connection.close()


def test_token_check_reaches_the_relay_through_nginx(stack: Stack) -> None:
    good = urllib.request.Request(f"{stack.https}/relay/auth", headers={"Authorization": f"Bearer {STATIC_TOKEN}"})
    with urllib.request.urlopen(good, timeout=seconds(10), context=stack.tls) as response:
        assert response.status == 204
    bad = urllib.request.Request(f"{stack.https}/relay/auth", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=seconds(10), context=stack.tls)
    assert refused.value.code == 401


async def test_drain_through_nginx_refuses_new_sockets_and_finishes_live_ones(tmp_path: Path) -> None:
    """SIGTERM (what systemd, docker and the kubelet send): readyz 503, new upgrades 503 with Retry-After, the
    live session keeps working through nginx until the drain closes it with 1001, and the relay exits 0."""
    relay_port = free_port()
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    drain_seconds = seconds(3)  # the live session must outlast what the test does during the drain, on a slow machine too
    with (
        relay_on(tmp_path / "relay", relay_port, shared_secret(tmp_path), RELAY_DRAIN_SECONDS=str(drain_seconds)) as relay,
        nginx_in_front_of(tmp_path, relay_port) as (_, https_port, tls),
    ):
        wss = f"wss://127.0.0.1:{https_port}/v1/realtime"
        async with connect(wss, ssl=tls, additional_headers=headers, open_timeout=seconds(15)) as live:
            await next_of_type(live, "session.created")
            relay.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_for_status, f"https://127.0.0.1:{https_port}/readyz", 503, tls)

            with pytest.raises(InvalidStatus) as refused:
                async with connect(wss, ssl=tls, additional_headers=headers, open_timeout=seconds(15)):
                    pass
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers.get("Retry-After")

            await live.send(json.dumps({"type": "session.update", "session": {"instructions": "Still here."}}))
            await next_of_type(live, "session.updated")
            async with asyncio.timeout(drain_seconds + seconds(10)):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await live.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert relay.wait(timeout=seconds(15)) == 0


async def test_with_two_relays_a_draining_one_sends_new_sockets_to_the_other(tmp_path: Path) -> None:
    """Several relays behind one nginx: while one drains (a live session keeps it up), every new upgrade through
    nginx still opens a session: the draining relay's 503 sends nginx on to the next relay."""
    secret = shared_secret(tmp_path)
    draining_port, serving_port = free_port(), free_port()
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    with (
        relay_on(tmp_path / "draining", draining_port, secret, RELAY_DRAIN_SECONDS="60") as draining,
        relay_on(tmp_path / "serving", serving_port, secret),
        nginx_in_front_of(tmp_path, draining_port, serving_port) as (_, https_port, tls),
    ):
        direct = f"ws://127.0.0.1:{draining_port}/v1/realtime"
        async with connect(direct, additional_headers=headers, open_timeout=seconds(15)) as live:
            await next_of_type(live, "session.created")
            draining.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_for_status, f"http://127.0.0.1:{draining_port}/readyz", 503, None)
            wss = f"wss://127.0.0.1:{https_port}/v1/realtime"
            for _ in range(6):  # round robin would put every other one on the draining relay
                async with connect(wss, ssl=tls, additional_headers=headers, open_timeout=seconds(15)) as ws:
                    await next_of_type(ws, "session.created")


def wait_for_status(url: str, status: int, tls: ssl.SSLContext | None) -> None:
    """Poll url until it answers `status` (the drain flips /readyz asynchronously after the signal)."""
    deadline = time.monotonic() + seconds(15)
    while time.monotonic() < deadline:
        if http_status(url, timeout=1.0, context=tls) == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {status}")
