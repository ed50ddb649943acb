"""`realtime-relay history` (docs/history.md) against the real simulator REST store on 127.0.0.1.

The store runs on its own event loop in a thread, because `relay.cli.main` runs one of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cli.main import main
from tests.support.conversations_fixtures import UPSTREAM_KEY, RestSim, ThreadedRestSim
from tests.support.timing import seconds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ThreadedRestSim, RestSim]]:
    monkeypatch.setenv("YANDEX_API_KEY", UPSTREAM_KEY)
    monkeypatch.delenv("YANDEX_IAM_TOKEN", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    threaded = ThreadedRestSim()
    with threaded as sim:
        yield threaded, sim


def history(sim: RestSim, *args: str) -> list[str]:
    return ["history", "--rest-base", sim.base_url, "--log-format", "json", *args]


def _ids_printed(out: str) -> list[str]:
    return [line.split("  ")[0] for line in out.splitlines()]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_all_prints_250_items_once_each_in_order(
    served: tuple[ThreadedRestSim, RestSim], order: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(250)
    code = main(history(sim, conversation_id, "--all", "--order", order, "--limit", "100"))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _ids_printed(out) == (ids if order == "asc" else ids[::-1])


def test_all_with_the_default_page_size_still_gets_every_item(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(250)
    assert main(history(sim, conversation_id, "--all")) == 0
    assert _ids_printed(capsys.readouterr().out) == ids[::-1]
    assert len([seen for seen in sim.seen if seen.raw_path.endswith("/items")]) == 13  # 250 / 20 rounded up


def test_without_all_one_page_is_printed(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(50)
    assert main(history(sim, conversation_id)) == 0
    assert _ids_printed(capsys.readouterr().out) == ids[::-1][:20]


def test_a_line_shows_id_type_role_and_text(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(2)
    assert main(history(sim, conversation_id, "--order", "asc")) == 0
    assert capsys.readouterr().out.splitlines() == [f"{ids[0]}  message  user  line 0", f"{ids[1]}  message  assistant  line 1"]


def test_audio_items_show_their_transcript(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    threaded, sim = served
    conversation_id = sim.store.create_conversation()["id"]
    threaded.call(
        lambda: sim.store.add_item(
            conversation_id,
            {
                "id": "item_a1",
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_audio", "transcript": "spoken\nreply", "audio": "AAAA"}],
            },
        )
    )
    assert main(history(sim, conversation_id)) == 0
    assert capsys.readouterr().out == "item_a1  message  assistant  spoken reply\n"


def test_long_text_is_truncated_to_the_terminal_width(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(1, prefix="word " * 100)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(history(sim, conversation_id)) == 0
    line = capsys.readouterr().out.rstrip("\n")
    assert len(line) == 80 and line.endswith("…")


def test_piped_output_is_not_truncated(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(1, prefix="word " * 100)
    assert main(history(sim, conversation_id)) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith("word 0")


def test_json_prints_each_item_as_one_json_line(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(45)
    assert main(history(sim, conversation_id, "--all", "--json", "--order", "asc")) == 0
    lines = capsys.readouterr().out.splitlines()
    items = [json.loads(line) for line in lines]
    assert [item["id"] for item in items] == ids
    assert items[0] == sim.store.get_item(conversation_id, ids[0])


def test_after_starts_past_the_cursor(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(30)
    assert main(history(sim, conversation_id, "--order", "asc", "--after", ids[9], "--limit", "5")) == 0
    assert _ids_printed(capsys.readouterr().out) == ids[10:15]
    assert main(history(sim, conversation_id, "--order", "asc", "--after", ids[9], "--all")) == 0
    assert _ids_printed(capsys.readouterr().out) == ids[10:]


@pytest.mark.parametrize(
    "args",
    [
        [b"conv_\xff".decode("utf-8", "surrogateescape")],  # a byte argv holds that is not UTF-8
        ["conv_1", "--after", b"\xff".decode("utf-8", "surrogateescape")],
        ["conv_1", "--after", " "],
    ],
)
def test_an_argument_that_is_no_usable_text_exits_2_and_sends_nothing(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    _, sim = served
    before = len(sim.seen)
    assert main(history(sim, *args)) == 2
    err = capsys.readouterr().err
    assert ("CONVERSATION_ID" in err or "--after" in err) and "Traceback" not in err
    assert len(sim.seen) == before


@pytest.mark.parametrize("limit", ["0", "101", "-5"])
def test_out_of_range_limit_prints_the_apis_400_and_exits_1(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(3)
    code = main(history(sim, conversation_id, "--limit", limit))
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert f"400 Bad Request: Invalid 'limit': {limit}. Limit can range between 1 and 100." in err
    assert sim.seen[-1].raw_query == f"limit={limit}"  # sent as given, once (400 is not retried)
    assert len(sim.seen) == 1


def test_unknown_after_cursor_prints_the_apis_400(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(3)
    assert main(history(sim, conversation_id, "--after", "msg_nope")) == 1
    assert "400 Bad Request: Invalid 'after'" in capsys.readouterr().err


def test_bad_key_exits_1_naming_the_key(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sim = served
    monkeypatch.setenv("YANDEX_API_KEY", "expired-key")
    assert main(history(sim, "conv_x")) == 1
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err and "bad or expired" in err
    assert "expired-key" not in err


def test_iam_token_is_sent_as_bearer(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(1)
    monkeypatch.setenv("YANDEX_API_KEY", "not-this-one")
    monkeypatch.setenv("YANDEX_IAM_TOKEN", UPSTREAM_KEY)
    assert main(history(sim, conversation_id)) == 0
    assert sim.seen[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_forbidden_message_names_role_and_scope(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded, sim = served
    threaded.call(lambda: sim.store.inject_faults(403, 1))
    assert main(history(sim, "conv_x")) == 1
    err = capsys.readouterr().err
    assert "403 Forbidden" in err and "ai.models.user" in err and "yc.ai.foundationModels.execute" in err


def test_unknown_conversation_exits_1_naming_it(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    assert main(history(sim, "conv_nope")) == 1
    err = capsys.readouterr().err
    assert "404 Not Found: conversation 'conv_nope' does not exist" in err


def test_quota_exits_1_after_four_tries(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    threaded, sim = served
    threaded.call(lambda: sim.store.inject_faults(429, 4, retry_after=0))
    assert main(history(sim, "conv_x")) == 1
    err = capsys.readouterr().err
    assert "429 Too Many Requests" in err and "quota" in err
    assert len(sim.seen) == 4
    assert err.count("retrying in 0.0 s") == 3


def test_injected_503_then_success_prints_everything(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded, sim = served
    conversation_id, ids = sim.conversation_with_items(60)
    threaded.call(lambda: sim.store.inject_faults(503, 2, retry_after=0))
    assert main(history(sim, conversation_id, "--all", "--order", "asc")) == 0
    out, err = capsys.readouterr()
    assert _ids_printed(out) == ids
    assert "503" in err and err.count("retrying") == 2


def test_injected_429_with_retry_after_one_second_then_success(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded, sim = served
    conversation_id, ids = sim.conversation_with_items(3)
    threaded.call(lambda: sim.store.inject_faults(429, 1, retry_after=1))
    assert main(history(sim, conversation_id, "--order", "asc")) == 0
    out, err = capsys.readouterr()
    assert _ids_printed(out) == ids
    assert "retrying in 1.0 s" in err


def test_unreachable_rest_base_exits_1(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["history", "--rest-base", f"http://127.0.0.1:{port}/v1", "conv_x"])
    assert code == 1
    assert "cannot reach the REST API" in capsys.readouterr().err


def test_empty_conversation_says_so_on_stderr(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, _ = sim.conversation_with_items(0)
    assert main(history(sim, conversation_id)) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no items" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--limit", "abc"],
        ["--limit", "1.5"],
        ["--order", "up"],
        [],
        ["conv_x", "--bogus"],
        ["conv_x", "extra"],
    ],
)
def test_usage_errors_exit_2(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    _, sim = served
    if args and not args[0].startswith("conv_"):
        args = ["conv_x", *args]
    assert main(["history", "--rest-base", sim.base_url, *args]) == 2
    assert sim.seen == []


def test_empty_conversation_id_is_a_usage_error(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    assert main(history(sim, "")) == 2
    assert "CONVERSATION_ID" in capsys.readouterr().err
    assert sim.seen == []


def test_a_bad_rest_base_is_a_config_error(served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--rest-base", "not a url", "conv_x"]) == 2
    assert "rest_base" in capsys.readouterr().err


def test_a_bad_credentials_file_is_a_config_error(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, sim = served
    bad = tmp_path / "creds"
    bad.write_text("this line has no equals sign\n", encoding="utf-8")
    monkeypatch.setenv("RELAY_CREDENTIALS_FILE", str(bad))
    assert main(history(sim, "conv_x")) == 2
    assert "credentials_file" in capsys.readouterr().err
    assert sim.seen == []


def test_the_installed_command_prints_every_item(served: tuple[ThreadedRestSim, RestSim]) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(250)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "realtime-relay"), *history(sim, conversation_id, "--all", "--order", "asc")],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds(60),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert _ids_printed(result.stdout) == ids


def test_upstream_sim_without_a_rest_base_is_a_usage_error_naming_rest_base(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    # `sim` would otherwise derive the production REST base and call it with the user's real credentials.
    assert main(["history", "--upstream", "sim", "conv_x"]) == 2
    err = capsys.readouterr().err
    assert "--rest-base" in err and "sim" in err


def test_upstream_sim_with_a_rest_base_lists_from_that_base(
    served: tuple[ThreadedRestSim, RestSim], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sim = served
    conversation_id, ids = sim.conversation_with_items(3)
    assert main(["history", "--upstream", "sim", "--rest-base", sim.base_url, "--order", "asc", conversation_id]) == 0
    assert _ids_printed(capsys.readouterr().out) == ids


@pytest.mark.parametrize("rest_base", [None, "https://ai.api.cloud.yandex.net/v1"])
def test_no_credentials_for_the_default_rest_base_exits_2_at_once_naming_where_they_go(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rest_base: str | None
) -> None:
    for name in ("YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "YANDEX_FOLDER_ID", "RELAY_CREDENTIALS_FILE", "RELAY_UPSTREAM", "RELAY_REST_BASE"):
        monkeypatch.delenv(name, raising=False)
    args = ["history", *(["--rest-base", rest_base] if rest_base else []), "conv_x"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "YANDEX_API_KEY" in err and "YANDEX_IAM_TOKEN" in err and "credentials_file" in err
    assert "retrying" not in err  # nothing was sent, so nothing was retried
