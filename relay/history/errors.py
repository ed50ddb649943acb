"""Errors of the Conversations REST client, one class per cause, with messages that name it.

    RestError (relay.errors)
    ├── ConversationsApiError       the API answered with an error status (status, api_message, body)
    │   ├── BadRequest              400: the API's own message is shown
    │   ├── AuthenticationFailed    401: the key or IAM token is bad or expired
    │   ├── PermissionDenied        403: missing role ai.models.user / key scope
    │   ├── NotFound                404: unknown conversation or item
    │   ├── QuotaExceeded           429: quota or rate limit
    │   ├── ServerError             5xx
    │   └── UnexpectedStatus        anything else
    ├── RestConnectionError         the API could not be reached or timed out
    └── InvalidResponse             a success answer that is not the documented JSON

Boundary: pure (no I/O): building errors from a status and a body, and parsing `Retry-After`.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Final

from relay.errors import RestError

# How much of an error body goes into a message: enough for any API message, bounded for HTML error pages.
MAX_ERROR_TEXT_CHARS: Final = 500


class ConversationsApiError(RestError):
    """The API answered with an error status."""

    def __init__(
        self, message: str, *, status: int, api_message: str, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_message = api_message
        self.body = body
        self.retry_after = retry_after


class BadRequest(ConversationsApiError):
    """400: the request was rejected; the API's message says why (e.g. `limit` out of 1..100)."""


class AuthenticationFailed(ConversationsApiError):
    """401: the API key or IAM token is bad or expired."""


class PermissionDenied(ConversationsApiError):
    """403: the credentials lack the role `ai.models.user` or the key lacks its scope."""


class NotFound(ConversationsApiError):
    """404: no such conversation or item."""


class QuotaExceeded(ConversationsApiError):
    """429: a quota or rate limit was hit."""


class ServerError(ConversationsApiError):
    """5xx: the API failed on its side."""


class UnexpectedStatus(ConversationsApiError):
    """Any other non-success status."""


class RestConnectionError(RestError):
    """The REST base could not be reached, or the answer did not arrive in time."""


class InvalidResponse(RestError):
    """A success status whose body is not the documented JSON."""


def explain_status(status: int, reason: str, api_message: str, target: str) -> tuple[type[ConversationsApiError], str]:
    said = f" (API: {api_message})" if api_message else ""
    if status == 400:
        return BadRequest, f"400 Bad Request: {api_message or 'the API rejected the request'}"
    if status == 401:
        return AuthenticationFailed, (
            "401 Unauthorized: the API key or IAM token was rejected (bad or "
            f"expired); check YANDEX_API_KEY / YANDEX_IAM_TOKEN{said}"
        )
    if status == 403:
        return PermissionDenied, (
            "403 Forbidden: the credentials are valid but not allowed here: the "
            "service account needs the role ai.models.user in the folder (an API key "
            f"also needs the scope yc.ai.foundationModels.execute){said}"
        )
    if status == 404:
        return NotFound, f"404 Not Found: {target} does not exist (unknown or deleted){said}"
    if status == 429:
        return QuotaExceeded, f"429 Too Many Requests: quota or rate limit exceeded; try again later{said}"
    if 500 <= status <= 599:
        return ServerError, f"{status} {reason}: the API failed on its side{said}"
    return UnexpectedStatus, f"{status} {reason}: unexpected answer{said}"


def api_message_of(body: Any, text: str) -> str:
    """The API's own message: OpenAI `{"error": {"message"}}`, gRPC-gateway `{"message"}`, or the raw text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return " ".join(text.split())[:MAX_ERROR_TEXT_CHARS]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
