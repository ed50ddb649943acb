"""Browser tier: the page names each way a session can fail, plainly (docs/lifecycle.md error codes and closes).

Relay down (the page's relay stopped), refused (the relay is draining after SIGTERM), too_many_sessions (max_sessions=1 and a second page), upstream_unavailable
(an upstream address where nothing listens), each against a real `realtime-relay serve`. How the rest
(client_too_slow, upstream_disconnected...) is named from the close is unit-tested in test_page_pcm.py.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.page_fixtures import RelayProcess, chromium_args, eventually, require_chromium, start_relay
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(None))
        yield chromium
        await chromium.close()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Any:
    started: list[RelayProcess] = []

    def start(name: str, **kwargs: Any) -> RelayProcess:
        process = start_relay(tmp_path / name, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def open_page(browser: Any, relay: RelayProcess) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(seconds(15) * 1000)
    await page.goto(relay.url)
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def watch_status(page: Any) -> None:
    """Record every state `#status` takes from now on, in `window.statusHistory`."""
    await page.evaluate(
        """() => {
            const status = document.querySelector("#status");
            window.statusHistory = [];
            new MutationObserver(() => window.statusHistory.push(status.dataset.state))
                .observe(status, { attributes: true, attributeFilter: ["data-state"] });
        }"""
    )


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_stopped_relay_is_shown_as_not_reachable(browser: Any, relay_factory: Any) -> None:
    relay = relay_factory("down")
    page = await open_page(browser, relay)
    assert relay.stop() == 0
    await page.click("#connect")
    error = page.locator("#error[data-kind=relay_down]")
    await error.wait_for()
    assert "not reachable" in await error.inner_text()
    await page.context.close()


async def test_one_session_too_many_is_shown_as_the_session_limit(browser: Any, relay_factory: Any) -> None:
    relay = relay_factory("limit", env={"RELAY_MAX_SESSIONS": "1"})
    first = await open_page(browser, relay)
    await first.click("#connect")
    await first.wait_for_selector("#status[data-state=open]")
    second = await open_page(browser, relay)
    await watch_status(second)
    await second.click("#connect")
    error = second.locator("#error[data-kind=too_many_sessions]")
    await error.wait_for()
    assert "session limit" in await error.inner_text()
    # The error frame comes before the close, and the status shows the close: wait for it.
    await second.wait_for_selector("#status[data-state=failed]")
    assert "1013" in await second.inner_text("#status")
    # The relay opened the socket, then refused the session: the page never said it was connected.
    history = await second.evaluate("window.statusHistory")
    assert "open" not in history and history[-1] == "failed", history
    assert await first.get_attribute("#status", "data-state") == "open"
    await first.context.close()
    await second.context.close()


async def test_an_unreachable_upstream_is_shown_as_upstream_unavailable(browser: Any, relay_factory: Any) -> None:
    relay = relay_factory(
        "upstream",
        env={"YANDEX_API_KEY": "not-a-real-key", "YANDEX_FOLDER_ID": "folder"},
        extra_args=["--upstream", f"ws://127.0.0.1:{free_port()}/v1/realtime"],
    )
    page = await open_page(browser, relay)
    await watch_status(page)
    await page.click("#connect")
    error = page.locator("#error[data-kind=upstream_unavailable]")
    await error.wait_for()
    assert "upstream" in await error.inner_text()
    await page.wait_for_selector("#status[data-state=failed]")  # the close follows the error frame
    history = await page.evaluate("window.statusHistory")
    assert "open" not in history and history[-1] == "failed", history  # never "connected"
    await page.context.close()


async def test_a_draining_relay_is_shown_as_refusing_not_as_down(browser: Any, relay_factory: Any) -> None:
    # The live session must outlast everything the test does during the drain, on a slow machine too.
    relay = relay_factory("drain", env={"RELAY_DRAIN_SECONDS": str(seconds(10))})
    live = await open_page(browser, relay)
    await live.click("#connect")
    await live.wait_for_selector("#status[data-state=open]")
    late = await open_page(browser, relay)
    relay.process.send_signal(signal.SIGTERM)  # drains: /readyz 503, new upgrades 503, live sessions go on
    assert await eventually(lambda: any(r.get("msg") == "relay.draining" for r in relay.stdout_records()))
    await late.click("#connect")
    error = late.locator("#error[data-kind=refused]")
    await error.wait_for()
    assert "refused" in await error.inner_text()
    assert await live.get_attribute("#status", "data-state") == "open"
    await live.context.close()  # the last session ends, so the relay finishes draining and exits
    await late.context.close()
    exit_code = await asyncio.to_thread(relay.process.wait, seconds(15))
    assert exit_code == 0
