"""`realtime-relay mic`: one voice session from this machine's microphone to its speaker, via the relay.

Boundary: CLI adapter. Picks the devices (`audio.devices`), runs `relay.mic.session.run_mic_session` under
`asyncio.run`, turns Ctrl-C / SIGTERM into a clean end (streams stopped, upstream closed, logs flushed,
exit 0) and prints a one-line summary to stderr. Device problems (none, unknown, ambiguous, unsupported
rate, no PortAudio) become `AudioDeviceError`, which the CLI reports with exit code 2. A session that could
not reach the upstream or lost it exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from audio.devices import DeviceError
from relay.cli import interrupts
from relay.cli.first_line import log_first_line
from relay.credentials import simulator_fallback
from relay.errors import AudioDeviceError, UsageError
from relay.mic.display import TerminalDisplay
from relay.mic.session import MicResult, choose_devices, run_mic_session
from relay.outcome import EndReason
from relay.tools.config import load_tools

if TYPE_CHECKING:
    from relay.settings import Settings

NAME = "mic"
HELP = "Talk to the model from this machine: microphone -> relay -> upstream -> speaker (Ctrl-C ends)."

_OK_REASONS = frozenset({EndReason.CLIENT_CLOSED, EndReason.UPSTREAM_CLOSED})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument(
        "--input-device",
        dest="input_device",
        metavar="INDEX|NAME",
        default=s,
        help="microphone: index or name substring from `realtime-relay devices` (default: the system's)",
    )
    parser.add_argument(
        "--output-device",
        dest="output_device",
        metavar="INDEX|NAME",
        default=s,
        help="speaker: index or name substring (default: the system's)",
    )
    parser.add_argument(
        "--duplex",
        dest="duplex",
        choices=("half", "full"),
        default=s,
        help="half (default): mic muted while the assistant speaks; full: for headphones, allows barge-in",
    )
    parser.add_argument(
        "--chunk-ms",
        dest="chunk_ms",
        type=int,
        metavar="MS",
        default=s,
        help="milliseconds of audio per input_audio_buffer.append (default 20)",
    )
    parser.add_argument(
        "--playback-buffer-ms",
        dest="playback_buffer_ms",
        type=int,
        metavar="MS",
        default=s,
        help="jitter buffer filled before playback starts (default 80)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        default=None,
        help="end the session by itself after this many seconds (as if Ctrl-C was pressed)",
    )


async def _main(settings: Settings, duration: float | None, display: TerminalDisplay) -> MicResult:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    display.on_lost = stop.set  # nobody reads the terminal any more (`mic | head`): end as Ctrl-C would
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    if interrupts.noted():  # a Ctrl-C while the process was starting
        stop.set()
    timer = loop.call_later(duration, stop.set) if duration is not None else None
    try:
        chosen = choose_devices(settings)
        display.notice(
            f"microphone {chosen.capture.describe()} at {chosen.capture.default_rate} Hz, speaker "
            f"{chosen.playback.describe()} at {chosen.playback.default_rate} Hz, {settings.duplex} duplex; "
            "Ctrl-C ends"
        )
        return await run_mic_session(settings, display=display, stop=stop, chosen=chosen)
    finally:
        if timer is not None:
            timer.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}")
    # The speaker callback runs in Python and needs the GIL within the device's ~10 ms buffer; a shorter
    # switch interval than the default 5 ms keeps a busy event loop from starving it into underruns.
    sys.setswitchinterval(0.002)
    settings, fell_back = simulator_fallback(settings, getattr(args, "setting_sources", {}).get("upstream", "default"))
    load_tools(settings, getattr(args, "setting_sources", {}).get("tools", "config"))  # exit 2 naming a bad tool
    log_first_line(settings, fell_back, answering="the session")
    if sys.stdout is None:  # started with stdout closed (`>&-`): there is no terminal to show the session on
        print("realtime-relay mic: standard output is closed; the session's transcripts need it", file=sys.stderr)
        return 1
    display = TerminalDisplay(sys.stdout)
    try:
        result = asyncio.run(_main(settings, args.duration, display))
    except DeviceError as exc:
        raise AudioDeviceError(str(exc)) from exc
    display.finish()
    outcome = result.outcome
    stats = result.agent.stats
    summary = (
        f"session {outcome.session_id} ended ({outcome.reason}): "
        f"{stats.appends} appends ({stats.appended_ms / 1000:.1f} s), {len(stats.barge_ins)} barge-ins, "
        f"{result.underruns} playback underruns, {result.output_underflows} output underflows, "
        f"{result.capture_overflows} capture overflows, {result.capture_dropped_blocks} dropped capture blocks"
    )
    if result.log_path is not None:
        summary += f"; event log {result.log_path}"
    print(summary, file=sys.stderr)
    if display.lost is not None:
        raise display.lost  # the command's stdout failure: `main` reports it (a closed pipe is exit 0)
    if result.lost_device is not None:
        print(f"realtime-relay mic: the {result.lost_device} stopped mid-session (device lost?)", file=sys.stderr)
        return 1
    if outcome.reason not in _OK_REASONS:
        print(f"realtime-relay mic: the session with {result.upstream_url} failed", file=sys.stderr)
        return 1
    return 0
