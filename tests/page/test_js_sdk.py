"""Browser tier: the official `openai` JavaScript SDK, in Chromium, against `serve` with client auth on.

`OpenAIRealtimeWebSocket` refuses to run in a browser unless its key looks ephemeral (starts with `ek_`, as OpenAI's
client secrets do) or the page passes `dangerouslyAllowBrowser`. A token minted by the relay's `client_secrets`
must pass that check as it is, open a session and complete a turn (README, "Embed it in your own web frontend").
The SDK is installed from the npm registry (pinned) and bundled with esbuild, once per checkout, under `build/`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.page_fixtures import RelayProcess, chromium_args, require_chromium, start_relay
from tests.support.relay_fixtures import mint_client_token
from tests.support.tiers import missing, require
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

STATIC_TOKEN = "js-sdk-test-static-token"
PACKAGES = ("openai@6.49.0", "esbuild@0.28.2")
SDK_DIR = Path(__file__).resolve().parents[2] / "build" / "js-sdk"

# One turn through the SDK's browser WebSocket client, given only a key and a base URL (no OpenAI client object, no
# dangerouslyAllowBrowser). The relay speaks plain ws:// here; the SDK builds wss:// from any base URL, so onURL
# points it back (README).
ENTRY = """
import { OpenAIRealtimeWebSocket } from 'openai/realtime/websocket';
window.oneTurn = async ({ base, token }) => {
  const out = [];
  try {
    const rt = new OpenAIRealtimeWebSocket(
      { model: 'speech-realtime-250923', onURL: (u) => { u.protocol = 'ws:'; } },
      { apiKey: token, baseURL: base },
    );
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(out.concat('timeout')), 15000);
      rt.on('error', (e) => out.push('error ' + e.message));
      rt.socket.addEventListener('close', (e) => { out.push('close ' + e.code); clearTimeout(timer); resolve(out); });
      rt.on('session.created', () => {
        out.push('session.created');
        rt.send({ type: 'conversation.item.create',
                  item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hello from a page' }] } });
        rt.send({ type: 'response.create' });
      });
      rt.on('response.done', (e) => { out.push('response.done ' + e.response.status); rt.close(); });
    });
  } catch (e) {
    return out.concat('throw ' + String(e.message).split('\\n')[0]);
  }
};
"""


def _installed() -> bool:
    lock = SDK_DIR / "node_modules" / ".package-lock.json"
    if not lock.exists():
        return False
    packages = json.loads(lock.read_text()).get("packages", {})
    return all(packages.get(f"node_modules/{spec.split('@')[0]}", {}).get("version") == spec.split("@")[1] for spec in PACKAGES)


@pytest.fixture(scope="module")
def sdk_bundle() -> str:
    npm = require("npm", "npm is not installed (make system-deps installs Node.js with it)")
    SDK_DIR.mkdir(parents=True, exist_ok=True)
    if not _installed():
        (SDK_DIR / "package.json").write_text('{"private": true}\n')
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--save-exact", *PACKAGES],
            cwd=SDK_DIR, capture_output=True, text=True, timeout=seconds(300),
        )  # fmt: skip
        if done.returncode != 0:
            missing(f"npm could not install {' '.join(PACKAGES)}: {done.stderr.strip().splitlines()[-1:]}")
    (SDK_DIR / "entry.mjs").write_text(ENTRY)
    subprocess.run(
        [str(SDK_DIR / "node_modules" / ".bin" / "esbuild"), "entry.mjs", "--bundle", "--format=iife", "--outfile=bundle.js"],
        cwd=SDK_DIR, check=True, capture_output=True, timeout=seconds(60),
    )  # fmt: skip
    return (SDK_DIR / "bundle.js").read_text()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("js_sdk_relay"), env={"RELAY_CLIENT_TOKENS": STATIC_TOKEN})
    yield process
    process.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(relay: RelayProcess, sdk_bundle: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(None))
        p = await browser.new_page()
        p.set_default_timeout(seconds(20) * 1000)
        await p.goto(relay.url)  # the relay's own page: the SDK's socket is same-origin
        await p.add_script_tag(content=sdk_bundle)
        yield p
        await browser.close()


def mint(relay: RelayProcess) -> str:
    return mint_client_token(relay.url, STATIC_TOKEN)


async def one_turn(page: Any, relay: RelayProcess, token: str) -> list[str]:
    result: list[str] = await page.evaluate("(a) => window.oneTurn(a)", {"base": f"{relay.url}v1", "token": token})
    return result


async def test_the_sdk_takes_a_minted_token_in_a_browser_and_completes_a_turn(page: Any, relay: RelayProcess) -> None:
    token = mint(relay)
    assert token.startswith("ek_")
    assert await one_turn(page, relay, token) == ["session.created", "response.done completed", "close 1000"]


async def test_the_sdk_refuses_a_key_that_does_not_look_ephemeral_in_a_browser(page: Any, relay: RelayProcess) -> None:
    # What the prefix buys: the same SDK call with the static token (or a token without `ek_`) never connects.
    for token in (STATIC_TOKEN, mint(relay).removeprefix("ek_")):
        outcome = await one_turn(page, relay, token)
        assert len(outcome) == 1 and outcome[0].startswith("throw It looks like you're running in a browser")
