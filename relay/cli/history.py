"""`realtime-relay history CONVERSATION_ID`: print a conversation's items (Conversations REST API, docs/history.md).

Boundary: the command-line adapter over `relay.history.client`. It loads the credentials, opens the process's
one HTTP session, lists one page (or with `--all` every page, following `after=last_id` until `has_more` is
false) and writes one line per item to stdout: `id  type  role  text`, or the item's JSON with `--json`. API
and network errors are printed to stderr with their cause, on one line with control characters made visible
(they quote the API's own words), and give exit 1; exit 2 is left to usage and config errors (argparse,
settings (a `rest_base` with `user:password@` among them), credentials file, upstream `sim` without a
`rest_base`: there is no simulator here to talk to, Yandex's default REST base with no credentials found, and
a key or token holding a character no HTTP header can carry, such as a newline: nothing is sent). 429, 5xx and
connection errors are retried (at most 4 tries, `Retry-After` honoured up to 30 s), with a notice on stderr per
retry. A stdout that cannot be written is `relay.cli.main`'s to report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from typing import Final, TextIO

from relay.credentials import Credentials
from relay.errors import RestError, UsageError
from relay.history.client import (
    HISTORY_RETRY,
    ConversationsClient,
    RetryNotice,
    RetryPolicy,
    create_http_session,
)
from relay.history.models import ConversationItem
from relay.redact import printable
from relay.settings import UPSTREAM_SIM, Settings, is_utf8_text, rest_base_url

NAME: Final = "history"
HELP: Final = "List the items of a conversation (Conversations REST API)."

MIN_TEXT_COLUMNS: Final = 20
ELLIPSIS: Final = "…"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("conversation_id", metavar="CONVERSATION_ID", help="the conversation to list")
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="items per page, sent as given (the API allows 1..100, default 20)"
    )
    parser.add_argument(
        "--order", choices=("asc", "desc"), default=None, help="oldest first (asc) or newest first (desc, the API's default)"
    )
    parser.add_argument("--after", metavar="ID", default=None, help="start after this item id (a cursor)")
    parser.add_argument("--all", action="store_true", dest="all_pages", help="follow the cursor until the last page")
    parser.add_argument("--json", action="store_true", dest="json_lines", help="print each item as one line of JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    conversation_id: str = args.conversation_id
    if not conversation_id.strip():
        raise UsageError("CONVERSATION_ID must not be empty")
    for what, value in (("CONVERSATION_ID", conversation_id), ("--after", args.after)):
        if value is not None and not is_utf8_text(value):
            raise UsageError(f"{what} is not valid UTF-8 text")
    if args.after is not None and not args.after.strip():
        raise UsageError("--after must name an item id (or be left out)")
    if settings.upstream == UPSTREAM_SIM and not settings.rest_base:
        # `history` starts no simulator, and deriving a REST base from `sim` would mean production (with the
        # user's real credentials): refuse instead of guessing.
        raise UsageError(
            "history has no embedded simulator: with upstream 'sim', pass --rest-base URL (RELAY_REST_BASE), "
            "e.g. http://127.0.0.1:8090/v1 for a running `realtime-relay sim`"
        )
    # ConfigError (a bad credentials file, a key with a line break in it) -> exit 2 in the CLI, nothing sent.
    credentials = Credentials.load(settings)
    base_url = rest_base_url(settings)
    if not credentials.present and base_url == rest_base_url(Settings()):
        # Yandex's API answers every unauthenticated call with 401: send nothing, and say where credentials go.
        raise UsageError(
            f"no upstream credentials for {base_url}: set YANDEX_API_KEY or YANDEX_IAM_TOKEN (environment), "
            "or name a file holding them with credentials_file (RELAY_CREDENTIALS_FILE)"
        )
    return asyncio.run(
        print_history(
            base_url=base_url,
            auth=credentials.authorization_header(),
            conversation_id=conversation_id,
            limit=args.limit,
            order=args.order,
            after=args.after,
            all_pages=args.all_pages,
            json_lines=args.json_lines,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


async def print_history(
    *,
    base_url: str,
    auth: dict[str, str],
    conversation_id: str,
    limit: int | None,
    order: str | None,
    after: str | None,
    all_pages: bool,
    json_lines: bool,
    out: TextIO,
    err: TextIO,
    retry: RetryPolicy = HISTORY_RETRY,
) -> int:
    """List and print; the exit code is the result. Separate from `run` so tests can pass a retry policy."""
    width = _text_width(out)

    def tell_retry(notice: RetryNotice) -> None:
        print(
            f"realtime-relay history: {flat_line(notice.cause)}; try {notice.attempt}/{notice.max_tries} failed, "
            f"retrying in {notice.delay:.1f} s",
            file=err,
            flush=True,
        )

    printed = 0
    try:
        async with create_http_session() as http:
            client = ConversationsClient(http, base_url, auth, retry=retry, on_retry=tell_retry)
            if all_pages:
                async for item in client.iter_items(conversation_id, limit=limit, order=order, after=after):
                    out.write(format_item(item, json_lines=json_lines, width=width))
                    printed += 1
            else:
                page = await client.list_items(conversation_id, limit=limit, order=order, after=after)
                for item in page.items:
                    out.write(format_item(item, json_lines=json_lines, width=width))
                    printed += 1
            out.flush()
    except RestError as exc:
        out.flush()
        print(f"realtime-relay history: {flat_line(str(exc))}", file=err)
        return 1
    if printed == 0:
        print(
            f"realtime-relay history: no items in conversation {conversation_id!r}" + (f" after {after!r}" if after else ""),
            file=err,
        )
    return 0


def _text_width(out: TextIO) -> int | None:
    """Columns for one line on a terminal (or $COLUMNS); None (no truncation) when writing to a pipe/file."""
    if "COLUMNS" not in os.environ and not (hasattr(out, "isatty") and out.isatty()):
        return None
    return shutil.get_terminal_size().columns


def flat_line(text: str) -> str:
    """`text` as one line that cannot drive the terminal, its whitespace runs (line breaks too) made one space:
    error messages quote the API's own words. (`relay.inspect.terminal.one_line` shows breaks as escapes instead,
    for values whose exact spelling matters.)"""
    return printable(" ".join(text.split()))


def format_item(item: ConversationItem, *, json_lines: bool, width: int | None) -> str:
    """One output line, newline included; text from the API never drives the terminal (see docs/security.md)."""
    if json_lines:
        return printable(json.dumps(item.raw, ensure_ascii=False, separators=(",", ":"))) + "\n"
    text = item.text
    # One item per line: newlines and tabs inside the text would break that.
    flat = flat_line(text) if text is not None else ""
    prefix = printable(f"{item.id}  {item.type or '-'}  {item.role or '-'}")
    if not flat:
        return prefix + "\n"
    line = f"{prefix}  {flat}"
    if width is not None and len(line) > width:
        room = max(width - len(prefix) - 2, MIN_TEXT_COLUMNS)
        if len(flat) > room:
            line = f"{prefix}  {flat[: room - 1]}{ELLIPSIS}"
    return line + "\n"
