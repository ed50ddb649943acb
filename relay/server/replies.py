"""How the `serve` routes answer in JSON: a JSON body, and the OpenAI-shaped error body
(`{"error": {"message", "type", "param", "code"}}`) every refusal of the HTTP side uses.

Boundary: response builders only; no request is read here.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def openai_error(status: int, message: str, code: str, error_type: str = "invalid_request_error") -> web.Response:
    return json_reply(status, {"error": {"message": message, "type": error_type, "param": None, "code": code}})
