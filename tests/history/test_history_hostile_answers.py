"""`history` never shows a traceback: answers too deeply nested to parse, listings that never end, and credentials
that no HTTP header can carry each give one clear line and an exit code."""

from __future__ import annotations

import io
import os

import pytest
from aiohttp import web

from relay.cli.history import print_history
from relay.cli.main import main
from relay.history.client import NO_RETRY, ConversationsClient, create_http_session
from relay.history.errors import InvalidResponse
from relay.history.models import preview
from tests.support.conversations_fixtures import UPSTREAM_KEY, ThreadedRestSim, serving

AUTH = {"Authorization": f"Api-Key {UPSTREAM_KEY}"}


async def _history(root: str, *, all_pages: bool = False, json_lines: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await print_history(base_url=f"{root}/v1", auth=AUTH, conversation_id="conv_x", limit=None, order=None,
                               after=None, all_pages=all_pages, json_lines=json_lines, out=out, err=err,
                               retry=NO_RETRY)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000])
async def test_an_answer_nested_too_deeply_to_parse_exits_1_with_one_line(body: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, out, err = await _history(root)
    assert (code, out) == (1, "")
    assert "nested too deeply" in err
    assert err.count("\n") == 1 and len(err) < 1000


async def test_an_error_answer_nested_too_deeply_still_gives_the_status() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=500, text="[" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root:
        code, out, err = await _history(root)
    assert (code, out) == (1, "")
    assert "500 Internal Server Error" in err and err.count("\n") == 1


def test_a_preview_of_a_value_too_deep_to_encode_says_so() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert preview(deep) == "<a list too deeply nested to show>"


async def test_all_stops_after_the_page_cap_with_a_message() -> None:
    async def answer(request: web.Request) -> web.Response:
        # Every page is new and says there is more: a listing that never ends.
        n = int(request.query.get("after", "msg_0").removeprefix("msg_")) + 1
        item = {"id": f"msg_{n}", "type": "message", "role": "user", "content": []}
        return web.json_response({"object": "list", "data": [item], "first_id": item["id"], "last_id": item["id"],
                                  "has_more": True})

    app = web.Application()
    app.router.add_get("/v1/conversations/{cid}/items", answer)
    async with serving(app) as root, create_http_session() as http:
        client = ConversationsClient(http, f"{root}/v1", AUTH)
        seen: list[str] = []
        with pytest.raises(InvalidResponse, match=r"stopped after 5 pages .* after='msg_5'"):
            async for item in client.iter_items("conv_x", max_pages=5):
                seen.append(item.id)
    assert seen == [f"msg_{n}" for n in range(1, 6)]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> ThreadedRestSim:
    for name in list(os.environ):
        if name.startswith(("RELAY_", "YANDEX_")):
            monkeypatch.delenv(name)
    return ThreadedRestSim()


@pytest.mark.parametrize("variable", ["YANDEX_API_KEY", "YANDEX_IAM_TOKEN"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [("key\n1", "U+000A"), ("key\r\nSet-Cookie: x", "U+000D"), ("key 1", "U+0020"), ("key\x7f1", "U+007F"),
     ("ключ", "non-ASCII")],
)
def test_a_key_with_a_character_no_header_can_carry_exits_2_naming_the_variable_not_the_value(
    served: ThreadedRestSim, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, shown: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with served as sim:
        code = main(["history", "--rest-base", sim.base_url, "--log-format", "json", "conv_x"])
        assert sim.seen == []  # nothing was sent
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert variable in err and shown in err
    assert value.strip() not in err and "Traceback" not in err
    assert err.count("\n") == 1
