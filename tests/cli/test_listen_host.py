"""A host `serve` or `sim` cannot listen on (not this machine's, not resolvable, not a valid name) is a config error
naming the host setting: exit 2 and one line, never a traceback."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.errors import ConfigError
from tests.support.timing import seconds

# 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine. `.invalid` never resolves (RFC 2606).
HOSTS = {
    "not this machine's": ("192.0.2.1", "Cannot assign requested address"),
    "unresolvable": ("no.such.host.invalid", "cannot be resolved"),
    "not a valid name": ("a..b", "not a valid host name"),
}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "YANDEX_"))}


@pytest.mark.parametrize("case", list(HOSTS))
@pytest.mark.parametrize("command", ["serve", "sim"])
def test_a_host_that_cannot_be_listened_on_exits_2_naming_the_host_setting(
    tmp_path: Path, command: str, case: str
) -> None:
    host, reason = HOSTS[case]
    extra = ["--insecure-no-auth", "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [sys.executable, "-m", "relay", command, "--host", host, "--port", "0", "--log-format", "json",
         *(extra if command == "serve" else [])],
        capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=seconds(60),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    setting = "host" if command == "serve" else "sim_host"
    prefix = f"realtime-relay {command}: setting '{setting}' from flag --host ({host}): "
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert reason in line
    assert "Traceback" not in result.stderr + result.stdout
    assert "command_failed" not in result.stderr + result.stdout


def test_a_port_problem_is_not_blamed_on_the_host() -> None:
    from relay.cli.serve import host_named_in_errors

    for port_problem in (OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)), PermissionError(errno.EACCES, "x")):
        with pytest.raises(OSError) as caught, host_named_in_errors("host", "127.0.0.1"):
            raise port_problem
        assert caught.value is port_problem
    with pytest.raises(ConfigError) as named, host_named_in_errors("host", "nowhere.invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert named.value.setting == "host"
