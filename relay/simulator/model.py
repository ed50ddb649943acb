"""The simulated model: which reply a response carries, decided from the conversation (pure, deterministic).

Given the session's items, config and knobs, `decide_reply` says whether the next response is a message
(its text and PCM16 audio) or function calls, and `schedule_text` spreads the text over the audio chunks.
The words themselves come from `replies`; how a reply is streamed as events is `responses`' business.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from relay.simulator import replies
from relay.simulator.items import StoredItem
from relay.simulator.knobs import Knobs


@dataclass
class Reply:
    kind: Literal["message", "function_call"]
    text: str = ""
    audio: bytes | None = None  # PCM16 at the output rate
    calls: list[tuple[str, str]] = field(default_factory=list)  # function calls: (name, arguments JSON)


def schedule_text(text: str, steps: int) -> list[str]:
    """The text deltas of a response spread over its `steps` chunks ("" = no text delta at that step)."""
    deltas = replies.split_text(text, steps)
    if steps <= len(deltas):
        return deltas
    schedule = [""] * steps
    for index, delta in enumerate(deltas):
        schedule[index * steps // len(deltas)] = delta
    return schedule


def decide_reply(
    items: OrderedDict[str, StoredItem],
    config: dict[str, Any],
    knobs: Knobs,
    calls: dict[str, str],
    with_audio: bool,
    out_rate: int,
) -> Reply:
    """The deterministic 'model': what to answer, from the last item of the conversation. `calls` maps the
    call ids seen so far to their tool names."""

    def spoken(text: str) -> Reply:
        return Reply("message", text, replies.speak_text(text, out_rate) if with_audio else None)

    tools = config["tools"] if config["tool_choice"] != "none" else []
    last = next(reversed(items.values()), None)
    if last is None or last.item.get("role") in ("assistant", "system"):
        return spoken(replies.GREETING)
    item = last.item
    if item["type"] == "function_call_output":
        # Every output of the run that ends the conversation (one per call of a response), in order.
        outputs: list[dict[str, Any]] = []
        for stored in reversed(items.values()):
            if stored.item["type"] != "function_call_output":
                break
            outputs.append(stored.item)
        results = (replies.tool_result_reply(calls.get(out["call_id"], "unknown"), out["output"]) for out in reversed(outputs))
        return spoken(" ".join(results))
    if item["type"] == "function_call":
        return spoken(f"Waiting for the output of {item['name']}.")
    if last.audio is not None and last.fmt is not None:
        if knobs.tool_on_audio and tools:
            return Reply("function_call", calls=[(str(tools[0]["name"]), "{}")])
        heard = next((p.get("transcript") for p in item["content"] if p.get("transcript")), None)
        text = replies.echo_text(heard or replies.describe_speech(last.audio_ms()))
        audio = replies.echo_audio(bytes(last.audio), last.fmt.rate, out_rate) if with_audio else None
        return Reply("message", text, audio)
    user_text = _message_text(item)
    found = replies.find_tool_calls(user_text, tools)
    if found:
        return Reply("function_call", calls=found)
    if replies.asks_recall(user_text):
        return spoken(replies.recall_reply(_earlier_user_texts(items, last)))
    return spoken(replies.text_reply(user_text))


def _message_text(item: dict[str, Any]) -> str:
    """A message's words: its text parts and audio transcripts, joined."""
    return " ".join(p.get("text") or p.get("transcript") or "" for p in item.get("content", []))


def _earlier_user_texts(items: OrderedDict[str, StoredItem], last: StoredItem) -> list[str]:
    """The texts (or transcripts) of the user messages before `last`, in conversation order."""
    texts: list[str] = []
    for stored in items.values():
        if stored is last:
            break
        item = stored.item
        if item.get("type") == "message" and item.get("role") == "user":
            text = _message_text(item)
            if text:
                texts.append(text)
    return texts
