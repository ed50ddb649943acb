"""Device selection (audio/devices.py select_device): a pure function over a device list, fed real-looking
lists (what PortAudio reports under ALSA + PulseAudio, and a USB headset machine) and garbage specs."""

from __future__ import annotations

import pytest

from audio.devices import (
    AmbiguousDeviceError,
    DeviceInfo,
    DeviceNotFoundError,
    NoDeviceError,
    select_device,
)

PULSE_MACHINE = [
    DeviceInfo(0, "pulse", "ALSA", 32, 32, 44100.0),
    DeviceInfo(1, "default", "ALSA", 32, 32, 44100.0),
]
HEADSET_MACHINE = [
    DeviceInfo(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 2, 48000.0),
    DeviceInfo(1, "HDA Intel PCH: HDMI 0 (hw:0,3)", "ALSA", 0, 8, 48000.0),
    DeviceInfo(2, "USB Headset: Audio (hw:1,0)", "ALSA", 1, 2, 16000.0),
    DeviceInfo(3, "pulse", "ALSA", 32, 32, 44100.0),
    DeviceInfo(4, "pulse-monitor", "ALSA", 32, 0, 44100.0),
]


def test_empty_spec_picks_the_default_device() -> None:
    assert select_device(PULSE_MACHINE, "", "input", default_index=1).name == "default"


def test_digits_pick_by_index() -> None:
    assert select_device(HEADSET_MACHINE, "2", "input").name.startswith("USB Headset")
    assert select_device(HEADSET_MACHINE, " 1 ", "output").index == 1


def test_name_substring_is_case_insensitive() -> None:
    assert select_device(HEADSET_MACHINE, "usb", "output").index == 2


def test_substring_only_considers_devices_of_the_wanted_kind() -> None:
    # "HDA" matches two devices, but only one has input channels.
    assert select_device(HEADSET_MACHINE, "hda", "input").index == 0


def test_ambiguous_substring_names_the_candidates() -> None:
    with pytest.raises(AmbiguousDeviceError, match=r"ambiguous.*#0.*#1"):
        select_device(HEADSET_MACHINE, "HDA", "output")


def test_exact_name_wins_over_longer_matches() -> None:
    assert select_device(HEADSET_MACHINE, "PULSE", "input").index == 3


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(DeviceNotFoundError, match=r"no input device matches 'nope'.*'pulse'"):
        select_device(PULSE_MACHINE, "nope", "input")


def test_index_out_of_range_is_not_found() -> None:
    with pytest.raises(DeviceNotFoundError, match="index 9"):
        select_device(PULSE_MACHINE, "9", "output")


def test_index_of_a_device_without_that_direction_says_so() -> None:
    with pytest.raises(DeviceNotFoundError, match="has no input channels"):
        select_device(HEADSET_MACHINE, "1", "input")


def test_no_devices_at_all_is_no_device() -> None:
    with pytest.raises(NoDeviceError, match="no input audio device"):
        select_device([], "", "input", default_index=None)


def test_no_output_devices_is_no_device_even_with_a_name() -> None:
    only_mics = [DeviceInfo(0, "mic", "ALSA", 1, 0, 16000.0)]
    with pytest.raises(NoDeviceError):
        select_device(only_mics, "mic", "output")


def test_missing_default_asks_for_a_device() -> None:
    with pytest.raises(NoDeviceError, match="--output-device"):
        select_device(PULSE_MACHINE, "", "output", default_index=None)


def test_default_index_pointing_at_a_device_of_the_wrong_kind_is_no_device() -> None:
    with pytest.raises(NoDeviceError):
        select_device(HEADSET_MACHINE, "", "input", default_index=1)


@pytest.mark.parametrize(
    "spec", ["-1", "99999999999999999999", "\x00", "pulse\n--x", "*", "٣", "../../etc", "a" * 10_000]
)
def test_garbage_specs_are_not_found_not_crashes(spec: str) -> None:
    with pytest.raises(DeviceNotFoundError):
        select_device(HEADSET_MACHINE, spec, "input")


def test_non_string_spec_is_refused() -> None:
    with pytest.raises(DeviceNotFoundError):
        select_device(PULSE_MACHINE, 3, "input")  # type: ignore[arg-type]


def test_whitespace_only_spec_means_default() -> None:
    assert select_device(PULSE_MACHINE, "   ", "output", default_index=0).name == "pulse"
