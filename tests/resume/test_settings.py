"""The resume settings: defaults, bounds, and what a session gets from them (docs/resume.md)."""

from __future__ import annotations

import pytest

from relay.core.resume import ResumePolicy
from relay.errors import ConfigError
from relay.settings import load_settings
from relay.wiring import session_policy


def test_resume_is_on_by_default_with_the_documented_bounds() -> None:
    settings = load_settings(env={}).settings
    policy = session_policy(settings, relay_events=False, tools=None)
    assert policy.resume == ResumePolicy(attempts=3, buffer_seconds=5.0, history_max_bytes=256 * 1024, gap_max_bytes=8 * 1024 * 1024)


def test_resume_settings_come_from_the_environment_and_can_turn_it_off() -> None:
    env = {
        "RELAY_UPSTREAM_RESUME_ATTEMPTS": "5",
        "RELAY_RESUME_BUFFER_SECONDS": "2.5",
        "RELAY_RESUME_HISTORY_MAX_BYTES": "1000",
        "RELAY_MAX_CLIENT_BACKLOG_BYTES": "4096",
    }
    policy = session_policy(load_settings(env=env).settings, relay_events=True, tools=None)
    assert policy.resume == ResumePolicy(attempts=5, buffer_seconds=2.5, history_max_bytes=1000, gap_max_bytes=4096)
    off = load_settings(env={"RELAY_UPSTREAM_RESUME": "false"}).settings
    assert session_policy(off, relay_events=False, tools=None).resume is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAY_UPSTREAM_RESUME_ATTEMPTS", "0"),
        ("RELAY_UPSTREAM_RESUME_ATTEMPTS", "many"),
        ("RELAY_UPSTREAM_RESUME_ATTEMPTS", "1e9"),
        ("RELAY_RESUME_BUFFER_SECONDS", "-1"),
        ("RELAY_RESUME_BUFFER_SECONDS", "nan"),
        ("RELAY_RESUME_HISTORY_MAX_BYTES", "-5"),
        ("RELAY_UPSTREAM_RESUME", "perhaps"),
    ],
)
def test_bad_resume_settings_are_config_errors_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={name: value})
    assert raised.value.setting == name.removeprefix("RELAY_").lower()
