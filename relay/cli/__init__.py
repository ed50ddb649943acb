"""The command line: argument parsing, settings loading, and one module per subcommand (`relay.cli.main` wires them).

`entry_point` is what the `realtime-relay` script and `python -m relay` run. It imports the command line only once
running, so a Ctrl-C while Python is still importing ends like one later: exit 130, no traceback.
"""

from __future__ import annotations

import sys

SIGINT_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command ended by Ctrl-C


def entry_point() -> None:
    try:
        from relay.cli.main import main

        code = main()
    except KeyboardInterrupt:
        code = SIGINT_EXIT_CODE
    sys.exit(code)
