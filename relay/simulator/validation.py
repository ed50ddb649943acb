"""Client-supplied session values checked per flavour: `session.update` patches and `response.create` params.

`apply_session_update` returns a NEW config dict or raises `SessionConfigError` (the caller keeps the old
config, so a bad update changes nothing). The openai flavour refuses an unknown key as the official API does;
the yandex flavour, like Yandex itself, ignores it and accepts its own extensions and its examples' quirks.
The config's shape, defaults and audio formats are `config`'s.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Final

from relay.simulator.config import (
    MAX_RATE,
    MIN_RATE,
    OPENAI_RATE,
    PCM,
    PCMA,
    PCMU,
    Flavour,
    SessionConfigError,
    default_turn_detection,
)

_SESSION_KEYS: Final = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "audio",
        "tracing",
        "truncation",
        "include",
    }
)
_AUDIO_KEYS: Final = frozenset({"input", "output"})
_INPUT_KEYS: Final = frozenset({"format", "turn_detection", "transcription", "noise_reduction"})
_OUTPUT_KEYS: Final = frozenset({"format", "voice", "speed"})
_SERVER_VAD_KEYS: Final = frozenset(
    {
        "type",
        "threshold",
        "silence_duration_ms",
        "prefix_padding_ms",
        "create_response",
        "interrupt_response",
        "idle_timeout_ms",
    }
)
_TOOL_KEYS: Final = frozenset({"type", "name", "description", "parameters"})
_TRANSCRIPTION_KEYS: Final = frozenset({"model", "language", "prompt"})
_NOISE_REDUCTION_TYPES: Final = ("near_field", "far_field")


def _bad_type(param: str, expected: str) -> SessionConfigError:
    return SessionConfigError("invalid_type", f"Invalid type for '{param}': expected {expected}.", param)


def _bad_value(param: str, problem: str) -> SessionConfigError:
    return SessionConfigError("invalid_value", f"Invalid value for '{param}': {problem}.", param)


def _unknown(param: str) -> SessionConfigError:
    return SessionConfigError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def _require_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_type(param, "an object")
    return value


def _check_keys(obj: dict[str, Any], allowed: frozenset[str], param: str, flavour: Flavour) -> dict[str, Any]:
    """`obj` without the keys it may not have. The openai flavour refuses an unknown key (`unknown_parameter`);
    the yandex flavour, like Yandex itself, accepts and ignores it: not echoed, no error."""
    unknown = [key for key in obj if key not in allowed]
    if not unknown:
        return obj
    if flavour == "openai":
        raise _unknown(f"{param}.{unknown[0]}")
    return {key: value for key, value in obj.items() if key in allowed}


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    # bool is an int subclass in Python but never a valid number on the wire.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _bad_type(param, "an integer")
    if not lo <= value <= hi:
        raise _bad_value(param, f"must be between {lo} and {hi}, got {value}")
    return int(value)


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad_type(param, "a number")
    if not lo <= value <= hi:
        raise _bad_value(param, f"must be between {lo} and {hi}, got {value}")
    return float(value)


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise _bad_type(param, "a boolean")
    return value


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad_type(param, "a string")
    return value


def validate_modalities(value: Any, param: str, flavour: Flavour) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad_type(param, "a non-empty array of 'audio' / 'text'")
    for entry in value:
        if entry not in ("audio", "text"):
            raise _bad_value(param, f"unsupported modality {entry!r}")
    if flavour == "openai" and len(set(value)) > 1:
        raise _bad_value(param, "only one of 'audio' or 'text' may be requested")
    return list(dict.fromkeys(value))


def _format(value: Any, param: str, flavour: Flavour) -> dict[str, Any]:
    fmt = _require_object(value, param)
    kind = fmt.get("type", PCM)
    if kind not in (PCM, PCMU, PCMA) or (flavour == "yandex" and kind != PCM):
        raise _bad_value(f"{param}.type", f"unsupported audio format {kind!r}")
    allowed = {"type", "rate"} if kind == PCM else {"type"}
    for key in fmt:
        # Yandex's own examples send `channels: 1`; accept it (mono only) but never echo it.
        if flavour == "yandex" and key == "channels":
            if fmt[key] != 1:
                raise _bad_value(f"{param}.channels", "only mono (1) audio is supported")
            continue
        if key not in allowed and flavour == "openai":
            raise _unknown(f"{param}.{key}")
    if kind != PCM:
        return {"type": kind}
    rate = fmt.get("rate", OPENAI_RATE)
    if flavour == "openai":
        if isinstance(rate, bool) or rate != OPENAI_RATE:
            raise _bad_value(f"{param}.rate", f"only {OPENAI_RATE} is supported, got {rate!r}")
        return {"type": PCM, "rate": OPENAI_RATE}
    return {"type": PCM, "rate": _int(rate, f"{param}.rate", MIN_RATE, MAX_RATE)}


def _turn_detection(value: Any, current: dict[str, Any] | None, param: str, flavour: Flavour) -> dict[str, Any] | None:
    if value is None:
        return None
    patch = _require_object(value, param)
    kind = patch.get("type", current["type"] if current else None)
    if kind != "server_vad":
        raise _bad_value(f"{param}.type", f"unsupported turn detection {kind!r} (the simulator has server_vad only)")
    patch = _check_keys(patch, _SERVER_VAD_KEYS, param, flavour)
    merged = dict(current) if current is not None else default_turn_detection(flavour)
    checks: dict[str, Callable[[Any, str], Any]] = {
        "threshold": lambda v, p: _number(v, p, 0.0, 1.0),
        "silence_duration_ms": lambda v, p: _int(v, p, 0, 10_000),
        "prefix_padding_ms": lambda v, p: _int(v, p, 0, 10_000),
        "create_response": _bool,
        "interrupt_response": _bool,
        "idle_timeout_ms": lambda v, p: None if v is None else _int(v, p, 5_000, 30_000),
    }
    for key, check in checks.items():
        if key in patch:
            merged[key] = check(patch[key], f"{param}.{key}")
    merged["type"] = "server_vad"
    return merged


def _tools(value: Any, param: str, flavour: Flavour) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _bad_type(param, "an array")
    tools: list[dict[str, Any]] = []
    for index, raw in enumerate(value):
        where = f"{param}[{index}]"
        tool = _check_keys(_require_object(raw, where), _TOOL_KEYS, where, flavour)
        if tool.get("type", "function") != "function":
            raise _bad_value(f"{where}.type", "only function tools are supported")
        name = _str(tool.get("name"), f"{where}.name") if "name" in tool else None
        if not name:
            raise SessionConfigError(
                "missing_required_parameter", f"Missing required parameter: '{where}.name'.", f"{where}.name"
            )
        if "description" in tool and tool["description"] is not None:
            _str(tool["description"], f"{where}.description")
        params = tool.get("parameters")
        # Yandex's examples send `"parameters": "{}"` (a string): accepted there, an object elsewhere.
        if params is not None and not isinstance(params, dict) and not (flavour == "yandex" and isinstance(params, str)):
            raise _bad_type(f"{where}.parameters", "a JSON schema object")
        tools.append(copy.deepcopy(tool))
    return tools


def _tool_choice(value: Any, param: str, flavour: Flavour) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return dict(_check_keys(value, frozenset({"type", "name"}), param, flavour))
    raise _bad_value(param, "expected 'auto', 'none', 'required' or {type: function, name}")


def _transcription(value: Any, param: str, flavour: Flavour) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _check_keys(_require_object(value, param), _TRANSCRIPTION_KEYS, param, flavour)
    for key in obj:
        _str(obj[key], f"{param}.{key}")
    return dict(obj)


def _noise_reduction(value: Any, param: str, flavour: Flavour) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _check_keys(_require_object(value, param), frozenset({"type"}), param, flavour)
    if obj.get("type") not in _NOISE_REDUCTION_TYPES:
        raise _bad_value(f"{param}.type", f"expected one of {_NOISE_REDUCTION_TYPES}")
    return dict(obj)


def _voice(value: Any, param: str, flavour: Flavour) -> Any:
    if isinstance(value, str) and value:
        return value
    if flavour == "openai" and isinstance(value, dict) and set(value) == {"id"} and isinstance(value["id"], str):
        return dict(value)
    raise _bad_type(param, "a voice name")


def _languages(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad_type(param, "an array of language codes")
    return list(value)


def _patch_input(current: dict[str, Any], value: Any, flavour: Flavour) -> None:
    param = "session.audio.input"
    patch = _require_object(value, param)
    allowed = _INPUT_KEYS | ({"languages"} if flavour == "yandex" else set())
    patch = _check_keys(patch, frozenset(allowed), param, flavour)
    if "format" in patch:
        current["format"] = _format(patch["format"], f"{param}.format", flavour)
    if "turn_detection" in patch:
        current["turn_detection"] = _turn_detection(
            patch["turn_detection"], current.get("turn_detection"), f"{param}.turn_detection", flavour
        )
    if "transcription" in patch:
        current["transcription"] = _transcription(patch["transcription"], f"{param}.transcription", flavour)
    if "noise_reduction" in patch:
        current["noise_reduction"] = _noise_reduction(patch["noise_reduction"], f"{param}.noise_reduction", flavour)
    if "languages" in patch:
        current["languages"] = _languages(patch["languages"], f"{param}.languages")


def _patch_output(current: dict[str, Any], value: Any, flavour: Flavour) -> None:
    param = "session.audio.output"
    patch = _require_object(value, param)
    allowed = _OUTPUT_KEYS | ({"role"} if flavour == "yandex" else set())
    patch = _check_keys(patch, frozenset(allowed), param, flavour)
    if "format" in patch:
        current["format"] = _format(patch["format"], f"{param}.format", flavour)
    if "voice" in patch:
        current["voice"] = _voice(patch["voice"], f"{param}.voice", flavour)
    if "speed" in patch:
        current["speed"] = _number(patch["speed"], f"{param}.speed", 0.25, 1.5)
    if "role" in patch:
        current["role"] = _str(patch["role"], f"{param}.role")


def apply_session_update(current: dict[str, Any], patch: Any, flavour: Flavour) -> dict[str, Any]:
    """The config after `patch` (a session.update's `session`); raises SessionConfigError, never partial."""
    if not isinstance(patch, dict):
        raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
    if "type" in patch:
        if patch["type"] != "realtime":
            raise _bad_value("session.type", f"expected 'realtime', got {patch['type']!r}")
    elif flavour == "openai":
        raise SessionConfigError("missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type")
    patch = _check_keys(patch, _SESSION_KEYS, "session", flavour)
    new = copy.deepcopy(current)
    if "model" in patch:
        new["model"] = _str(patch["model"], "session.model")
    if "instructions" in patch:
        new["instructions"] = _str(patch["instructions"], "session.instructions")
    if "output_modalities" in patch:
        new["output_modalities"] = validate_modalities(patch["output_modalities"], "session.output_modalities", flavour)
    if "tools" in patch:
        new["tools"] = _tools(patch["tools"], "session.tools", flavour)
    if "tool_choice" in patch:
        new["tool_choice"] = _tool_choice(patch["tool_choice"], "session.tool_choice", flavour)
    if "max_output_tokens" in patch:
        value = patch["max_output_tokens"]
        new["max_output_tokens"] = "inf" if value == "inf" else _int(value, "session.max_output_tokens", 1, 4096)
    if "tracing" in patch:
        if patch["tracing"] not in (None, "auto"):
            raise _bad_value("session.tracing", "expected null or 'auto'")
        new["tracing"] = patch["tracing"]
    if "truncation" in patch:
        if patch["truncation"] not in ("auto", "disabled"):
            raise _bad_value("session.truncation", "expected 'auto' or 'disabled'")
        new["truncation"] = patch["truncation"]
    if "include" in patch:
        inc = patch["include"]
        if not isinstance(inc, list) or any(v != "item.input_audio_transcription.logprobs" for v in inc):
            raise _bad_value("session.include", "only 'item.input_audio_transcription.logprobs' is known")
        new["include"] = list(inc)
    if "audio" in patch:
        audio = _require_object(patch["audio"], "session.audio")
        audio = _check_keys(audio, _AUDIO_KEYS, "session.audio", flavour)
        if "input" in audio:
            _patch_input(new["audio"]["input"], audio["input"], flavour)
        if "output" in audio:
            _patch_output(new["audio"]["output"], audio["output"], flavour)
    return new


def validate_response_params(params: Any, flavour: Flavour) -> dict[str, Any]:
    """The `response` object of response.create -> the overrides the simulator honours (output_modalities,
    instructions, metadata, conversation). The openai flavour rejects unknown keys; yandex ignores them (its
    own examples send the beta `modalities` and `conversation: "default"`)."""
    if params is None:
        return {}
    obj = _require_object(params, "response")
    known = {
        "output_modalities",
        "instructions",
        "metadata",
        "conversation",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "audio",
        "input",
    }
    out: dict[str, Any] = {}
    if flavour == "openai":
        _check_keys(obj, frozenset(known), "response", flavour)
    elif "modalities" in obj and "output_modalities" not in obj:
        out["output_modalities"] = validate_modalities(obj["modalities"], "response.modalities", flavour)
    if "output_modalities" in obj:
        out["output_modalities"] = validate_modalities(obj["output_modalities"], "response.output_modalities", flavour)
    if "instructions" in obj:
        out["instructions"] = _str(obj["instructions"], "response.instructions")
    if "metadata" in obj and obj["metadata"] is not None:
        meta = _require_object(obj["metadata"], "response.metadata")
        if not all(isinstance(v, str) for v in meta.values()):
            raise _bad_type("response.metadata", "an object of strings")
        out["metadata"] = dict(meta)
    if "conversation" in obj:
        conv = obj["conversation"]
        allowed_conv = ("auto", "none", "default") if flavour == "yandex" else ("auto", "none")
        if conv not in allowed_conv:
            raise _bad_value("response.conversation", f"expected one of {allowed_conv}")
        out["conversation"] = "none" if conv == "none" else "auto"
    return out
