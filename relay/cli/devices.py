"""`realtime-relay devices [--json]`: the audio devices `mic` can use, with their default rates.

Boundary: CLI adapter over `audio.devices` (PortAudio). Prints one line per device (index, direction, default
rate, host API, name; `*` marks the defaults) or JSON lines with `--json` to stdout. Exit codes: 0 ok (an
empty list is a valid answer, said on stderr), 2 PortAudio is not usable on this machine.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import orjson

from audio import devices
from relay.errors import AudioDeviceError

if TYPE_CHECKING:
    from relay.settings import Settings

NAME = "devices"
HELP = "List audio input/output devices with their default rates (for mic --input-device/--output-device)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per device per line")


def _direction(device: devices.DeviceInfo) -> str:
    counts = (("in", device.max_input_channels), ("out", device.max_output_channels))
    parts = [name for name, n in counts if n]
    return "/".join(parts)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        found = devices.list_devices()
        default_in, default_out = devices.default_device_indices()
    except devices.DeviceError as exc:
        raise AudioDeviceError(str(exc)) from exc
    if not found:
        print("no audio devices found (is a sound server such as PulseAudio running?)", file=sys.stderr)
        return 0
    for d in found:
        if args.json:
            record = {
                "index": d.index,
                "name": d.name,
                "hostapi": d.hostapi,
                "max_input_channels": d.max_input_channels,
                "max_output_channels": d.max_output_channels,
                "default_samplerate": d.default_rate,
                "default_input": d.index == default_in,
                "default_output": d.index == default_out,
            }
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            continue
        marks = ("<" if d.index == default_in else " ") + (">" if d.index == default_out else " ")
        print(
            f"{marks} {d.index:>3}  {_direction(d):<6} {d.default_rate:>6} Hz  "
            f"in {d.max_input_channels:>2} out {d.max_output_channels:>2}  {d.hostapi}: {d.name}"
        )
    if not args.json:
        print("(< default input, > default output; choose with --input-device/--output-device INDEX|NAME)")
    return 0
