"""Helpers for the browser tier of the page (tests/test_page_*.py): a `realtime-relay serve` subprocess, a
spoken-utterance WAV for Chromium's fake microphone, Chromium launched by Playwright, and the relay's event log.

I/O: starts and stops subprocesses (the relay, espeak-ng, sox), writes files under the test's tmp dir, reads the
relay's JSONL logs. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tiers import require
from tests.support.timing import seconds

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BASE_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def require_chromium() -> str:
    return require(CHROMIUM, "Chromium is not installed at /usr/bin/chromium (make system-deps)")


def chromium_args(fake_mic_wav: Path | None) -> list[str]:
    """Launch flags; with a WAV, Chromium's fake microphone plays it in a loop."""
    args = list(BASE_CHROMIUM_ARGS)
    if fake_mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_mic_wav}")
    return args


def speech_wav(path: Path, text: str, *, lead_s: float, tail_s: float) -> Path:
    """An utterance by espeak-ng, padded with silence (so server VAD sees it end), as 48 kHz mono PCM16 WAV."""
    espeak = require("espeak-ng", "espeak-ng is not installed (make system-deps)")
    sox = require("sox", "sox is not installed (make system-deps)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run([espeak, "-w", str(raw), text], check=True, capture_output=True, timeout=seconds(30))
    subprocess.run(
        [sox, str(raw), "-r", "48000", "-c", "1", "-b", "16", str(path), "pad", str(lead_s), str(tail_s)],
        check=True,
        capture_output=True,
        timeout=seconds(30),
    )
    return path


def _relay_command() -> list[str]:
    script = Path(sys.executable).parent / "realtime-relay"
    return [str(script)] if script.exists() else [sys.executable, "-m", "relay"]


@dataclass
class RelayProcess:
    """A running `realtime-relay serve --port 0`; `url` is its page, `log_dir`/`data_dir` its tmp dirs."""

    process: subprocess.Popen[bytes]
    port: int
    log_dir: Path
    data_dir: Path
    stdout_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> int:
        """SIGTERM (the relay drains and exits 0); SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=seconds(15))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stdout_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.stdout_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def session_records(self) -> list[dict[str, Any]]:
        """Every record of every session log (docs/event-log.md), in file then line order."""
        records = []
        for path in sorted(self.log_dir.glob("*/*.jsonl")):
            # The relay's writer thread may be appending while this reads: whatever follows the last newline is a
            # line still being written, read whole on the next poll. Split on b"\n" only (no splitlines: U+2028...).
            for line in path.read_bytes().split(b"\n")[:-1]:
                if line.strip():
                    records.append(json.loads(line))
        return records


def start_relay(tmp: Path, *, env: Mapping[str, str] | None = None, extra_args: list[str] | None = None) -> RelayProcess:
    """Start `serve --port 0` with tmp log/data dirs and a clean environment (no YANDEX_*/RELAY_* leaking in)."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_dir, data_dir = tmp / "logs", tmp / "data"
    stdout_path = tmp / "serve.stdout"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("YANDEX_", "RELAY_"))}
    child_env.update(env or {})
    args = [
        *_relay_command(),
        "serve",
        "--port",
        "0",
        "--log-format",
        "json",
        "--log-dir",
        str(log_dir),
        "--data-dir",
        str(data_dir),
        *(extra_args or []),
    ]
    with stdout_path.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=tmp)
    relay = RelayProcess(process, 0, log_dir, data_dir, stdout_path)
    deadline = time.monotonic() + seconds(20)
    while time.monotonic() < deadline:
        for record in relay.stdout_records():
            if record.get("msg") == "relay.listening":
                relay.port = int(record["port"])
                return relay
        if process.poll() is not None:
            raise RuntimeError(f"relay exited {process.returncode}: {stdout_path.read_text()[-2000:]}")
        time.sleep(0.05)  # polling a subprocess's log file for its start line; not test synchronisation
    relay.stop()
    raise RuntimeError(f"relay did not log relay.listening: {stdout_path.read_text()[-2000:]}")


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `check` (e.g. over the relay's log files, flushed every 200 ms) until it returns something truthy;
    the last result otherwise. Polling a file written by another process, not a sleep standing in for an event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds(timeout)
    while True:
        result = check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(0.05)


async def open_session(page: Any, url: str) -> None:
    """Load the page at `url`, connect, and wait until the session is open (the microphone not yet on)."""
    page.set_default_timeout(seconds(20) * 1000)
    await page.goto(url)
    await page.wait_for_selector("body[data-ready=true]")
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=open]")
