"""The command line: argument parsing, settings loading, and one module per subcommand (`relay.cli.main` wires them).

`entry_point` is what the `realtime-relay` script and `python -m relay` run. It notes a Ctrl-C from its first line
(`relay.cli.interrupts`) and imports the command line only then, so a Ctrl-C while Python is still importing ends
like one later: exit 130, no traceback, and never lost.
"""

from __future__ import annotations

import contextlib
import os
import sys

SIGINT_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command ended by Ctrl-C


def stdout_to_devnull() -> None:
    """Point the process's stdout at /dev/null: what is still buffered for a reader that went away (`| head`) or a
    stream that cannot be written never will be, and the interpreter's flush at exit must not complain of it."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor behind sys.stdout (replaced in-process)
        stdout_fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout_fd)
        os.close(devnull)


def standard_streams_open() -> None:
    """Open /dev/null on each of stdin, stdout and stderr that the process was started without (`serve >&-`), as
    daemons do: else the first files and sockets the relay opens take those numbers, so a log line written to
    "stdout" would land in a client's socket, and uvloop aborts the process when it closes a socket numbered 0-2.
    Python has already set a missing stream's `sys.std*` to None; the daemon log then goes to stderr."""
    for fd in (0, 1, 2):  # os.open takes the lowest free number: the closed one
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # only if another thread raced for it; never on a fresh start
                os.dup2(opened, fd)
                os.close(opened)


def entry_point() -> None:
    from relay.cli import interrupts

    interrupts.note_from_now()
    standard_streams_open()
    try:
        from relay.cli.main import main

        code = main()
    except KeyboardInterrupt:
        code = SIGINT_EXIT_CODE
    except RuntimeError as exc:
        # Python 3.11 wraps what interrupts a class's creation (a dataclass field's `__set_name__`) in a
        # RuntimeError: a Ctrl-C that lands there while the settings module is imported is still a Ctrl-C.
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        code = SIGINT_EXIT_CODE
    sys.exit(code)
