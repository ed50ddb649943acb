"""Schema oracle: validate a server event against the official `openai` SDK models, plus unknown-key checks.

    from tests.support.schema_oracle import validate_server_event
    validate_server_event(event_dict, "yandex")   # or "openai"; raises AssertionError naming the problem

The SDK's pydantic models (`openai.types.realtime`, GA) check types and required fields but accept extra keys,
so after validating, every model instance in the parsed tree is searched for extras: any key the SDK does not
know fails. Free-form fields typed `object` in the SDK (a tool's `parameters`) are not searched.
The yandex flavour is exempt on exactly what the README (The simulator) allows: the `rate` field (any integer 8000..48000 where
the SDK says 24000) and the Yandex extensions a client itself sent and that are echoed back in a session
(`session.audio.input.languages`: a list of strings, `session.audio.output.role`: a string).
Both flavours: a session event's `session.object` ("realtime.session") and `session.id` (a string), which the real APIs
send and the SDK's session models leave undeclared.
No I/O.
"""

from __future__ import annotations

import copy
import typing
from functools import cache
from typing import Any

import pydantic
from openai.types.realtime import RealtimeServerEvent

FLAVOURS = ("yandex", "openai")
_SESSION_EVENTS = ("session.created", "session.updated")


@cache
def _models_by_type() -> dict[str, type[pydantic.BaseModel]]:
    union = typing.get_args(RealtimeServerEvent)[0]  # Annotated[Union[...], PropertyInfo] -> Union[...]
    models: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(union):
        literal = model.model_fields["type"].annotation
        for value in typing.get_args(literal):
            models[value] = model
    return models


def known_server_event_types() -> frozenset[str]:
    return frozenset(_models_by_type())


def _exempt_yandex(event: dict[str, Any]) -> None:
    """Apply the yandex-flavour exemptions in place (on a copy of the event)."""

    def relax_rates(node: Any, path: str) -> None:
        if isinstance(node, dict):
            rate = node.get("rate")
            if "rate" in node and node.get("type", "audio/pcm") == "audio/pcm":
                if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
                    raise AssertionError(f"{path}.rate: {rate!r} is not an integer rate in 8000..48000")
                node["rate"] = 24000
            for key, value in node.items():
                relax_rates(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                relax_rates(value, f"{path}[{index}]")

    relax_rates(event, "event")
    if event.get("type") not in _SESSION_EVENTS or not isinstance(event.get("session"), dict):
        return
    audio = event["session"].get("audio")
    if not isinstance(audio, dict):
        return
    audio_in, audio_out = audio.get("input"), audio.get("output")
    if isinstance(audio_in, dict) and "languages" in audio_in:
        languages = audio_in.pop("languages")
        if not isinstance(languages, list) or not all(isinstance(v, str) for v in languages):
            raise AssertionError(f"session.audio.input.languages must be a list of strings, got {languages!r}")
    if isinstance(audio_out, dict) and "role" in audio_out:
        role = audio_out.pop("role")
        if not isinstance(role, str):
            raise AssertionError(f"session.audio.output.role must be a string, got {role!r}")


def _accept_session_identity(event: dict[str, Any]) -> None:
    """Both APIs lead the session of session.created/updated with `object: "realtime.session"` and the session's `id`,
    which the SDK's session models (shared with the client's session.update) do not declare: checked, then removed."""
    session = event.get("session")
    if event.get("type") not in _SESSION_EVENTS or not isinstance(session, dict):
        return
    if "object" in session and session.pop("object") != "realtime.session":
        raise AssertionError("session.object must be 'realtime.session'")
    if "id" in session and not isinstance(session.pop("id"), str):
        raise AssertionError("session.id must be a string")


def _extras(node: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(node, pydantic.BaseModel):
        found += [f"{path}.{key}" for key in (node.model_extra or {})]
        for name in type(node).model_fields:
            found += _extras(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            found += _extras(value, f"{path}[{index}]")
    return found


def validate_server_event(event: dict[str, Any], flavour: str) -> None:
    """Raise AssertionError unless `event` is a valid GA server event with no unknown keys (see module doc)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if not isinstance(event, dict):
        raise AssertionError(f"a server event must be a JSON object, got {type(event).__name__}")
    type_ = event.get("type")
    model = _models_by_type().get(type_) if isinstance(type_, str) else None
    if model is None:
        raise AssertionError(f"unknown server event type {type_!r}")
    candidate = copy.deepcopy(event)
    _accept_session_identity(candidate)
    if flavour == "yandex":
        _exempt_yandex(candidate)
    try:
        parsed = model.model_validate(candidate)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{type_} does not validate as {model.__name__}: {exc}") from None
    unknown = _extras(parsed, "event")
    if unknown:
        raise AssertionError(f"{type_} has keys the SDK does not know: {', '.join(unknown)}")
