"""The `realtime-relay` command line: parse arguments, load settings, configure logging, run a subcommand.

Each subcommand lives in `relay.cli.<name>`; this module only wires them together and maps errors to exit
codes (0 ok, 1 runtime failure, 2 usage or config error, see docs/configuration.md). A standard output that
cannot be written is reported here for every command, in one line: a reader that went away (`| head`) ends the
command quietly with 0, as a Unix tool would; any other write failure (a full disk, `>/dev/full`) exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, TextIO, cast

import structlog

from relay import __version__
from relay.cli import SIGINT_EXIT_CODE, interrupts, stdout_to_devnull
from relay.credentials import FALLBACK_COMMANDS, describe_effective, simulator_fallback
from relay.errors import AudioDeviceError, ConfigError, StartupError, UsageError
from relay.linestream import flush_all
from relay.logconfig import configure_logging
from relay.redact import redact_text, register_secret
from relay.settings import UPSTREAM_SIM, LoadedSettings, load_settings
from relay.tools.config import load_tools

COMMANDS: tuple[str, ...] = (
    "serve",
    "history",
    "devices",
    "mic",
    "logs",
    "sim",
)

# The daemons log to stdout (docs/event-log.md); the one-shot tools and `mic` (whose terminal shows the conversation) keep
# stdout for their own output and log to stderr.
DAEMON_COMMANDS = frozenset({"serve", "sim"})
SIGINT_HANDLING_COMMANDS = frozenset({"serve", "sim", "mic"})  # their event loop handles SIGINT (relay.cli.interrupts)
TOOL_COMMANDS = frozenset({"serve", "mic"})  # the commands that run server tools


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    s = argparse.SUPPRESS
    group.add_argument("--config", metavar="FILE", default=None, help="TOML settings file (env RELAY_CONFIG)")
    group.add_argument("--upstream", dest="upstream", metavar="URL|sim", default=s, help="upstream realtime URL, or 'sim'")
    group.add_argument("--rest-base", dest="rest_base", metavar="URL", default=s, help="Conversations REST base URL")
    group.add_argument("--model", dest="model", default=s, help="upstream model (gpt://FOLDER/NAME or NAME)")
    group.add_argument("--log-dir", dest="log_dir", metavar="DIR", default=s, help="event log directory (./logs)")
    group.add_argument("--data-dir", dest="data_dir", metavar="DIR", default=s, help="saved audio directory (./data)")
    group.add_argument("--log-format", dest="log_format", choices=("auto", "json", "console"), default=s)
    group.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"), default=s)
    group.add_argument(
        "--strict-config",
        dest="strict_config",
        action="store_const",
        const="true",
        default=s,
        help="unknown TOML keys and RELAY_* variables are errors, not warnings (env RELAY_STRICT_CONFIG)",
    )
    group.add_argument("--print-config", action="store_true", help="print the effective settings and exit")
    return common


def _load_command(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"relay.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's own, so a subcommand's usage error shows its own usage."""
    parser = argparse.ArgumentParser(
        prog="realtime-relay",
        description="Relay between realtime-voice clients and Yandex AI Studio's OpenAI-compatible Realtime API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()
    commands: dict[str, argparse.ArgumentParser] = {}
    for name in COMMANDS:
        module = _load_command(name)
        command = sub.add_parser(module.NAME, parents=[common], help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_module=module)
        commands[module.NAME] = command
    return parser, commands


class _WatchedStdout:
    """sys.stdout while a command runs: writes and flushes go to the real stream, and the last OSError they raised
    is kept, so a failure of standard output is told apart from any other OSError the command lets out."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self.inner.write(text)
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        try:
            self.inner.flush()
        except OSError as exc:
            self.failure = exc
            raise

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the real stream's
        return getattr(self.inner, name)


def _stdout_closed(command: str, exc: OSError) -> int:
    """The exit code, and the one-line report, of a standard output that cannot be written."""
    stdout_to_devnull()
    if isinstance(exc, BrokenPipeError):
        return 0
    print(f"realtime-relay {command}: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
    return 1


def _check_as_at_start(command: str, loaded: LoadedSettings) -> None:
    """The configuration checks the command itself makes before it starts anything, so `--print-config` exits 2
    for every configuration the command would refuse: server tools, the bind policy and token secret of `serve`,
    the simulator's knobs (of the simulator `serve` and `mic` fall back to without credentials, too), `mic`'s
    audio devices."""
    from relay.server.app import check_bind_policy, embedded_simulator_options, token_secret
    from relay.wiring import simulator_options

    settings = loaded.settings
    if command in FALLBACK_COMMANDS:
        settings, _ = simulator_fallback(settings, loaded.sources.get("upstream", "default"))

    if command in TOOL_COMMANDS:
        load_tools(settings, loaded.sources.get("tools", "config"))
    if command == "serve":
        check_bind_policy(settings)
        token_secret(settings)
        embedded_simulator_options(settings)
    elif command == "sim":
        simulator_options(settings)
    elif command == "mic":
        if settings.upstream == UPSTREAM_SIM:
            simulator_options(settings, embedded=True)
        from audio.devices import DeviceError
        from relay.mic.session import choose_devices

        try:
            choose_devices(settings)  # a missing or ambiguous device: found, not opened
        except DeviceError as exc:
            raise AudioDeviceError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _build_parsers()
    try:
        # Unknown options are reported by the subcommand's parser: `serve --bogus` shows serve's usage.
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        loaded = load_settings(vars(args), config_path=args.config, flag_names=getattr(args._module, "FLAG_NAMES", None))
    except ConfigError as exc:
        print(redact_text(f"realtime-relay: config error: {exc}"), file=sys.stderr)
        return 2
    for warning in loaded.warnings:
        print(f"realtime-relay: warning: {warning} (--strict-config makes this an error)", file=sys.stderr)
    register_secret(*loaded.secret_values())
    if args.print_config:
        try:
            text = describe_effective(loaded, args.command)
            _check_as_at_start(args.command, loaded)
            print(text)
        except ConfigError as exc:
            print(redact_text(f"realtime-relay: config error: {exc.traced_to(loaded.sources)}"), file=sys.stderr)
            return 2
        except AudioDeviceError as exc:
            print(redact_text(f"realtime-relay {args.command}: {exc}"), file=sys.stderr)
            return 2
        return 0
    stream = sys.stdout if args.command in DAEMON_COMMANDS else sys.stderr
    configure_logging(loaded.settings.log_format, loaded.settings.log_level, stream, daemon=args.command in DAEMON_COMMANDS)
    module: ModuleType = args._module
    # The daemons' stdout is their log, which the logging handler writes (and reports failures of) itself.
    watched = _WatchedStdout(sys.stdout) if args.command not in DAEMON_COMMANDS and sys.stdout is not None else None
    if watched is not None:
        sys.stdout = cast(TextIO, watched)
    try:
        args.setting_sources = loaded.sources  # where each setting came from, for commands that care
        # A Ctrl-C noted while starting ends the command here; the daemons take SIGINT over in their event loop.
        interrupts.hand_over(daemon=args.command in SIGINT_HANDLING_COMMANDS)
        code = module.run(args, loaded.settings)
        if watched is not None:
            sys.stdout.flush()  # what is still buffered fails here, not in the interpreter's flush at exit
    except (ConfigError, UsageError, AudioDeviceError) as exc:
        shown = exc.traced_to(loaded.sources) if isinstance(exc, ConfigError) else exc
        print(redact_text(f"realtime-relay {args.command}: {shown}"), file=sys.stderr)
        return 2
    except StartupError as exc:  # the message says it all; a traceback would bury it
        print(f"realtime-relay {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return SIGINT_EXIT_CODE
    except Exception as exc:
        if watched is not None and isinstance(exc, OSError) and exc is watched.failure:
            return _stdout_closed(args.command, exc)
        structlog.get_logger().exception("relay.command_failed", command=args.command)
        print(redact_text(f"realtime-relay {args.command}: {exc.__class__.__name__}: {exc}"), file=sys.stderr)
        return 1
    finally:
        if watched is not None and sys.stdout is cast(TextIO, watched):
            sys.stdout = watched.inner
        flush_all()  # the log lines still waiting for their stream's writer thread
    return int(code)
