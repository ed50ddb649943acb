"""Settings: one frozen `Settings` object, loaded in one place with precedence flag > env > TOML > default.

`relay.settings.schema` says what the settings are (names, types, defaults, doc lines, rules, `Secret`);
`relay.settings.load` builds them from the sources and checks them (docs/configuration.md). Import either
from here.
"""

from relay.settings.load import (
    ENV_NOT_SETTINGS,
    ENV_NOT_SETTINGS_PREFIXES,
    FileRefused,
    closest_setting,
    describe,
    is_utf8_text,
    load_settings,
    read_settings_file,
    read_toml,
    unknown_env_variables,
)
from relay.settings.schema import (
    DEFAULT_MODEL_NAME,
    DEFAULT_UPSTREAM,
    ENV_PREFIX,
    SETTING_NAMES,
    UPSTREAM_SIM,
    LoadedSettings,
    MiB,
    Secret,
    Settings,
    env_name,
    rest_base_url,
    setting_doc,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_UPSTREAM",
    "ENV_NOT_SETTINGS",
    "ENV_NOT_SETTINGS_PREFIXES",
    "ENV_PREFIX",
    "SETTING_NAMES",
    "UPSTREAM_SIM",
    "FileRefused",
    "LoadedSettings",
    "MiB",
    "Secret",
    "Settings",
    "closest_setting",
    "describe",
    "env_name",
    "is_utf8_text",
    "load_settings",
    "read_settings_file",
    "read_toml",
    "rest_base_url",
    "setting_doc",
    "unknown_env_variables",
]
