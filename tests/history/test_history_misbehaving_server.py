"""`history` against a REST server that misbehaves: what reaches the terminal and how `--all` ends.

The server is a small aiohttp app on 127.0.0.1 port 0; `print_history` is driven directly (its output streams are
StringIO), so the exact stdout and stderr a user would see are checked.
"""

from __future__ import annotations

import io
import re

import pytest
from aiohttp import web

from relay.cli.history import print_history
from relay.cli.main import main
from relay.history.client import NO_RETRY, RetryPolicy
from tests.support.conversations_fixtures import UPSTREAM_KEY, serving

AUTH = {"Authorization": f"Api-Key {UPSTREAM_KEY}"}
# Any raw terminal control: C0 (but the newline ending a line), DEL, C1, bidi overrides/isolates.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "bad \x1b[2J\x1b]0;pwned\x07 id\u202e\r\nline2\x9b31m"


def _item(item_id: str) -> dict[str, object]:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": item_id}]}


async def _history(root: str, *, all_pages: bool = False, retry: RetryPolicy = NO_RETRY) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await print_history(base_url=f"{root}/v1", auth=AUTH, conversation_id="conv_x", limit=None, order=None,
                               after=None, all_pages=all_pages, json_lines=False, out=out, err=err, retry=retry)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
@pytest.mark.parametrize("shape", ["openai", "text"])
async def test_an_api_error_message_never_drives_the_terminal(status: int, shape: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        if shape == "openai":
            return web.json_response({"error": {"message": HOSTILE}}, status=status)
        return web.Response(status=status, text=HOSTILE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, out, err = await _history(root)
    assert code == 1 and out == ""
    assert "pwned" in err  # the API's message is still shown...
    assert not RAW_CONTROL.search(err), err  # ...with its controls made visible
    assert err.count("\n") == 1


async def test_retry_notices_never_drive_the_terminal() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": HOSTILE}}, status=503, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, _, err = await _history(root, retry=RetryPolicy(max_tries=3))
    assert code == 1
    assert err.count("retrying in") == 2
    assert not RAW_CONTROL.search(err), err


async def test_a_success_answer_that_is_not_json_never_drives_the_terminal() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=HOSTILE, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, _, err = await _history(root)
    assert code == 1 and "not JSON" in err
    assert not RAW_CONTROL.search(err), err


async def test_all_never_prints_an_item_twice_when_the_server_repeats_a_page() -> None:
    async def answer(request: web.Request) -> web.Response:
        # Ignores `after`: every answer is the first page again, with "more" to come.
        return web.json_response({"object": "list", "data": [_item("msg_a"), _item("msg_b")], "first_id": "msg_a",
                                  "last_id": "msg_b", "has_more": True})

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, out, err = await _history(root, all_pages=True)
    assert code == 1 and "no new cursor" in err
    assert [line.split("  ")[0] for line in out.splitlines()] == ["msg_a", "msg_b"]


async def test_all_never_prints_an_item_twice_when_the_cursors_go_round_in_a_cycle() -> None:
    pages = {
        None: ([_item("msg_a"), _item("msg_b")], "msg_b"),
        "msg_b": ([_item("msg_c")], "msg_c"),
        "msg_c": ([_item("msg_a"), _item("msg_b")], "msg_b"),  # back to the first page
    }

    async def answer(request: web.Request) -> web.Response:
        data, last_id = pages[request.query.get("after")]
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"], "last_id": last_id,
                                  "has_more": True})

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, out, err = await _history(root, all_pages=True)
    assert code == 1 and "no new cursor" in err
    assert [line.split("  ")[0] for line in out.splitlines()] == ["msg_a", "msg_b", "msg_c"]


def test_a_rest_base_with_credentials_in_it_is_a_config_error_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YANDEX_API_KEY", UPSTREAM_KEY)
    code = main(["history", "--log-format", "json", "--rest-base", "http://user:hunter2@127.0.0.1:9/v1", "conv_x"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "rest_base" in err
    assert "Traceback" not in err
    assert "hunter2" not in err
