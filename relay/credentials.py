"""Upstream credentials: from the environment or a KEY=VALUE file, never logged or shown (docs/configuration.md,
docs/security.md).

`Credentials.load` reads the process environment and, when `credentials_file` is set, that file; it is called on
every upstream connect so a rotated IAM token is picked up. Values in the file override the environment (the file
is what an operator rotates). Between the two key kinds, `YANDEX_IAM_TOKEN` wins over `YANDEX_API_KEY`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from relay.errors import ConfigError
from relay.redact import register_credentials
from relay.settings import (
    DEFAULT_MODEL_NAME,
    DEFAULT_UPSTREAM,
    UPSTREAM_SIM,
    FileRefused,
    LoadedSettings,
    Secret,
    Settings,
    describe,
    read_settings_file,
    rest_base_url,
)

CREDENTIAL_KEYS = ("YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "YANDEX_FOLDER_ID")


def parse_credentials_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped; optional quotes and `export ` stripped."""
    source = str(path)
    try:
        text = read_settings_file(path)
    except FileRefused as exc:
        raise ConfigError("credentials_file", source, str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("credentials_file", source, f"cannot read: {exc.__class__.__name__}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].strip()
        key, sep, value = stripped.partition("=")
        if not sep or not key.strip():
            # The line itself may hold a secret: name only its number.
            raise ConfigError("credentials_file", f"{path}:{number}", "expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Credentials:
    api_key: Secret | None
    iam_token: Secret | None
    folder_id: str

    @classmethod
    def load(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        # Stripped like the file's values: a key pasted with a newline, or a blank one, is not a different key.
        merged = {key: value for key in CREDENTIAL_KEYS if (value := env.get(key, "").strip())}
        if settings.credentials_file:
            from_file = parse_credentials_file(Path(settings.credentials_file))
            merged.update({key: value for key, value in from_file.items() if key in CREDENTIAL_KEYS and value})
        for key in CREDENTIAL_KEYS:
            if key in merged:
                _check_characters(key, merged[key], settings.credentials_file)
        credentials = cls(
            api_key=Secret(merged["YANDEX_API_KEY"]) if merged.get("YANDEX_API_KEY") else None,
            iam_token=Secret(merged["YANDEX_IAM_TOKEN"]) if merged.get("YANDEX_IAM_TOKEN") else None,
            folder_id=merged.get("YANDEX_FOLDER_ID", ""),
        )
        # Whatever the relay writes from now on masks them, even where no `Api-Key`/`Bearer` word precedes them
        # (an upstream that repeats the key in its refusal, a library's error text).
        register_credentials(*credentials.secrets())
        return credentials

    @property
    def present(self) -> bool:
        return self.api_key is not None or self.iam_token is not None

    def authorization_header(self) -> dict[str, str]:
        """The upstream Authorization header (empty when there are no credentials, e.g. for the simulator)."""
        if self.iam_token is not None:
            return {"Authorization": f"Bearer {self.iam_token.reveal()}"}
        if self.api_key is not None:
            return {"Authorization": f"Api-Key {self.api_key.reveal()}"}
        return {}

    def secrets(self) -> tuple[str, ...]:
        """Raw secret values, for scrubbing checks in tests and defensive redaction."""
        return tuple(s.reveal() for s in (self.api_key, self.iam_token) if s is not None)


# What a key or token is made of: visible ASCII (it travels in an HTTP header, where a line break would end it).
_CREDENTIAL_CHARS: Final = re.compile(r"[\x21-\x7e]+")


def _check_characters(name: str, value: str, credentials_file: str) -> None:
    """ConfigError naming the variable when a key, token or folder id holds a character none has (a pasted line
    break, a control character, a byte that is not UTF-8); the message never repeats the value, and no request is
    made with it."""
    if _CREDENTIAL_CHARS.fullmatch(value):
        return
    bad = next(c for c in value if not _CREDENTIAL_CHARS.fullmatch(c))
    # The code point of a line break or space says what went wrong; a letter's would repeat part of the secret.
    control = ord(bad) <= 0x20 or 0x7F <= ord(bad) <= 0x9F
    what = f"a control or space character (U+{ord(bad):04X})" if control else "a non-ASCII character"
    where = f"environment or credentials_file {credentials_file}" if credentials_file else "environment"
    raise ConfigError(name, where, f"holds {what}, which no key, token or folder id has; set it to the value alone")


def resolve_model(settings: Settings, credentials: Credentials) -> str:
    """The configured model, or Yandex's default model URI in the credentials' folder (docs/configuration.md).

    With credentials but no `YANDEX_FOLDER_ID` the default cannot be built (it would be `gpt:///...`, which the
    upstream refuses only later and less clearly): ConfigError naming `model`. Without credentials (a local
    OpenAI-compatible server, a simulator) the folder-less value is kept, as no folder can be expected there.
    """
    if settings.model:
        return qualify_model(settings.model, credentials.folder_id)
    if credentials.present and not credentials.folder_id:
        raise ConfigError(
            "model",
            "default",
            f"YANDEX_FOLDER_ID is not set, so the default model gpt://<folder>/{DEFAULT_MODEL_NAME} cannot be "
            "built; set YANDEX_FOLDER_ID (environment or credentials_file) or configure model (RELAY_MODEL)",
        )
    return f"gpt://{credentials.folder_id}/{DEFAULT_MODEL_NAME}"


def qualify_model(name: str, folder_id: str) -> str:
    """A `gpt://...` value is used as given; a bare name becomes gpt://<folder>/<name>."""
    if name.startswith("gpt://") or not folder_id:
        return name
    return f"gpt://{folder_id}/{name}"


def simulator_fallback(settings: Settings, upstream_source: str = "default") -> tuple[Settings, bool]:
    """(settings, fell_back): the default upstream, configured by nobody, without credentials means the embedded
    simulator, for `serve` and `mic` alike. An upstream set explicitly is used as given, so a deployment that
    lost its credentials fails loudly (upstream 401) instead of quietly serving simulated answers."""
    if upstream_source == "default" and settings.upstream == DEFAULT_UPSTREAM and not Credentials.load(settings).present:
        return dataclasses.replace(settings, upstream=UPSTREAM_SIM), True
    return settings, False


# Commands that fall back to the embedded simulator without credentials (see `simulator_fallback`).
FALLBACK_COMMANDS = frozenset({"serve", "mic"})


def describe_effective(loaded: LoadedSettings, command: str) -> str:
    """`--print-config`: the settings as the command will use them, and whether credentials were found.

    The `upstream` line shows the embedded simulator when the command would fall back to it; the credentials
    line names which variables were found and where, never a value.
    """
    settings, sources = loaded.settings, dict(loaded.sources)
    if command in FALLBACK_COMMANDS:
        settings, fell_back = simulator_fallback(settings, sources.get("upstream", "default"))
        if fell_back:
            sources["upstream"] = "default upstream, no credentials found: the embedded simulator"
    if not settings.rest_base and settings.upstream != UPSTREAM_SIM:
        settings = dataclasses.replace(settings, rest_base=rest_base_url(settings))
        sources["rest_base"] = "derived from upstream"
    text = describe(LoadedSettings(settings, sources, loaded.warnings))
    credentials = Credentials.load(loaded.settings)
    where = "environment"
    if loaded.settings.credentials_file:
        where += f" and credentials_file {loaded.settings.credentials_file}"
    if credentials.present:
        kind = "YANDEX_IAM_TOKEN" if credentials.iam_token is not None else "YANDEX_API_KEY"
        folder = "YANDEX_FOLDER_ID set" if credentials.folder_id else "YANDEX_FOLDER_ID not set"
        found = f"found ({kind}, {folder}; looked in the {where})"
    else:
        found = f"not found (looked for YANDEX_API_KEY / YANDEX_IAM_TOKEN in the {where})"
    return f"{text}\n# upstream credentials: {found}"
