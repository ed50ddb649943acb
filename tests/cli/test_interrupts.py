"""relay.cli.interrupts: a Ctrl-C while the process starts is noted and acted on, never lost, wherever it lands
(a library's import that would turn it into an ImportError, the daemon's start before its event loop handles
SIGINT), and a second one still interrupts at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from relay.cli import SIGINT_EXIT_CODE
from tests.support.timing import seconds


def _run(tmp_path: Path, before_start: str, command: str = "serve") -> subprocess.CompletedProcess[str]:
    """`realtime-relay COMMAND` through the real entry point, in a fresh interpreter, after `before_start` (which
    arranges for a SIGINT to be sent at a chosen moment)."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        {before_start}
        sys.argv = ["realtime-relay", {command!r}, "--port", "0", "--log-format", "json",
                    "--log-dir", {logs!r}, "--data-dir", {data!r}]
        from relay.cli import entry_point
        entry_point()
        """
    ).format(before_start=before_start, command=command, logs=str(tmp_path / "logs"), data=str(tmp_path / "data"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=seconds(30)
    )


# A SIGINT sent while `ssl` imports `_socket` (as asyncio imports ssl): Python's own handler would raise
# KeyboardInterrupt there, CPython reports it as an ImportError of `ssl`, asyncio takes that for "no ssl" and goes on,
# and the daemon started and ran with the Ctrl-C lost.
SIGINT_WHILE_SSL_IMPORTS = """
import builtins
real_import = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == "_socket" and sys._getframe(1).f_globals.get("__name__") == "importlib._bootstrap":  # _ssl asking
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = hooked
"""


def test_a_ctrl_c_while_a_library_imports_ends_the_start_with_130_and_is_not_lost(tmp_path: Path) -> None:
    done = _run(tmp_path, SIGINT_WHILE_SSL_IMPORTS)
    assert done.returncode == SIGINT_EXIT_CODE, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "relay.listening" not in done.stdout  # ended before anything was started


def test_a_ctrl_c_before_the_daemons_event_loop_handles_it_starts_the_drain(tmp_path: Path) -> None:
    """Between the command's start and its event loop taking SIGINT over, a Ctrl-C is noted; the drain it asks for
    starts as soon as the loop's handler is in (exit 0, the drain logged), for `serve` and for `sim`."""
    for command, module, function in [("serve", "relay.cli.serve", "check_bind_policy"), ("sim", "relay.cli.sim", "start_simulator")]:
        before = f"""
import importlib
target = importlib.import_module({module!r})
real = getattr(target, {function!r})
def hooked(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
setattr(target, {function!r}, hooked)
"""
        done = _run(tmp_path / command, before, command)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stdout + done.stderr


def test_a_second_ctrl_c_while_starting_interrupts_at_once(tmp_path: Path) -> None:
    twice = """
import builtins
real_import = builtins.__import__
def hooked(name, *args, **kwargs):
    if name == "_socket" and sys._getframe(1).f_globals.get("__name__") == "importlib._bootstrap":
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = hooked
"""
    done = _run(tmp_path, twice)
    # The second one raised where it landed: the process ended interrupted (130, or Python's own -2 when the
    # import turned it into an error the command line reports), never started.
    assert done.returncode != 0
    assert "relay.listening" not in done.stdout
