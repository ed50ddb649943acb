"""The relay's exception hierarchy. Pure definitions, no I/O.

    RelayError                      base of everything the relay raises on purpose
    ├── ConfigError                 a bad setting: names the setting and its source; CLI exit code 2
    ├── UsageError                  bad command-line usage that argparse cannot see; exit code 2
    ├── StartupError                the daemon cannot start for a reason outside its settings (port taken); exit 1
    ├── AudioDeviceError            no such device, ambiguous name, unsupported rate; exit code 2
    ├── UpstreamError               trouble with the upstream realtime endpoint
    │   ├── UpstreamUnavailable     connect failed or handshake refused (status, reason); client close 1013
    │   └── UpstreamDisconnected    the upstream socket dropped mid-session; client close 1014
    └── RestError                   the Conversations REST API answered with an error (see relay.history.client)

Only adapters (server, bridge, CLI) turn these into close codes, HTTP statuses or exit codes.
"""

from __future__ import annotations

from collections.abc import Mapping


class RelayError(Exception):
    """Base class for errors the relay raises on purpose."""


class ConfigError(RelayError):
    """A setting is invalid. The message names the setting and where its value came from."""

    def __init__(self, setting: str, source: str, problem: str) -> None:
        self.setting = setting
        self.source = source
        self.problem = problem
        super().__init__(f"setting {setting!r} from {source}: {problem}" if source else f"setting {setting!r}: {problem}")

    def traced_to(self, sources: Mapping[str, str]) -> ConfigError:
        """This error naming where the setting's value came from (`sources`, the loader's), for a check made after
        loading that knows only the value: `from flag --host (0.0.0.0)`, not `from 0.0.0.0`."""
        origin = sources.get(self.setting)
        if origin is None or origin.startswith("default") or origin in self.source:
            return self
        return ConfigError(self.setting, f"{origin} ({self.source})" if self.source else origin, self.problem)


class UsageError(RelayError):
    """The command line asks for something that cannot be done (exit 2)."""


class StartupError(RelayError):
    """The daemon cannot start for a reason outside its configuration (e.g. its port is taken): exit 1."""


class AudioDeviceError(RelayError):
    """An audio device cannot be found, is ambiguous, or does not support what is asked (exit 2)."""


class UpstreamError(RelayError):
    """Base for failures of the upstream realtime connection."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached or refused the handshake."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class UpstreamDisconnected(UpstreamError):
    """The upstream socket closed or dropped during a session."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class RestError(RelayError):
    """The Conversations REST API (or the way to it) failed; subclasses say why."""
