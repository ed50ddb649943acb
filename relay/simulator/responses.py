"""Responses: `response.create` / `response.cancel`, and streaming the live response as server events.

`Responses` starts a response with the reply `model` decides: a message is streamed by `step_response()`,
one audio chunk (and its share of the text) per call, until it completes or is cancelled; function calls
are emitted whole at once. It builds the `realtime.response` objects and their token usage. At most one
response is live; the parts above it (`turns`, `conversation`) may cancel it.
"""

from __future__ import annotations

import base64
import copy
import math
from typing import Any, Final

from audio import pcm
from relay.core import events as ev
from relay.simulator import replies
from relay.simulator.config import AudioFormat, output_format, wants_audio
from relay.simulator.items import StoredItem
from relay.simulator.model import decide_reply, schedule_text
from relay.simulator.session_state import LiveResponse, SessionState
from relay.simulator.validation import validate_response_params

CHUNK_MS: Final = 40  # audio per output delta (the GA service sends 20..100 ms)


class Responses(SessionState):
    """The live response's lifecycle and streaming, on top of the session's state."""

    def _response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self._response is not None:
            self._error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}.",
                None,
                event_id,
            )
            return
        self._start_response(validate_response_params(event.get("response"), self.flavour))

    def _response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted is not None and wanted != self._response.id):
            self._error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                "response_id" if wanted is not None else None,
                event_id,
            )
            return
        self._cancel_response("client_cancelled")

    def _response_object(
        self, resp: LiveResponse, status: str, details: dict[str, Any] | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": copy.deepcopy(resp.output),
            "conversation_id": self.conversation_id if resp.in_conversation else None,
            "output_modalities": list(resp.modalities),
            "max_output_tokens": self.config["max_output_tokens"],
            "audio": {
                "output": {
                    "format": copy.deepcopy(self.config["audio"]["output"]["format"]),
                    "voice": copy.deepcopy(resp.voice),
                }
            },
            "usage": usage,
            "metadata": resp.metadata,
        }

    def _start_response(self, params: dict[str, Any]) -> None:
        modalities = params.get("output_modalities", self.config["output_modalities"])
        with_audio = wants_audio(modalities)
        out_fmt = output_format(self.config)
        reply = decide_reply(self.items, self.config, self.knobs, self._calls, with_audio, out_fmt.rate)
        in_conversation = params.get("conversation", "auto") != "none"
        input_tokens = sum(replies.audio_tokens(s.audio_ms()) + 8 for s in self.items.values())
        resp_id = self._mint("resp")
        item_id = self._mint("item")
        if reply.kind == "function_call":
            self._function_call_response(resp_id, item_id, reply.calls, modalities, params, in_conversation, input_tokens)
            return
        part_type = "output_audio" if with_audio else "output_text"
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        stored = StoredItem(
            item=item,
            audio=bytearray() if with_audio else None,
            fmt=out_fmt if with_audio else None,
            audio_index=0,
        )
        n_chunks = max(1, math.ceil(len(reply.audio or b"") / self._chunk_bytes(out_fmt))) if with_audio else 0
        resp = LiveResponse(
            id=resp_id,
            modalities=modalities,
            metadata=params.get("metadata"),
            in_conversation=in_conversation,
            out_fmt=out_fmt,
            voice=self.config["audio"]["output"]["voice"],
            text=reply.text,
            audio=reply.audio,
            item=item,
            stored=stored,
            text_chunks=schedule_text(reply.text, n_chunks if with_audio else len(reply.text.split())),
            input_tokens=input_tokens,
        )
        self._response = resp
        self._emit(ev.RESPONSE_CREATED, response=self._response_object(resp, "in_progress", None, None))
        self._emit(ev.RESPONSE_OUTPUT_ITEM_ADDED, response_id=resp_id, output_index=0, item=copy.deepcopy(item))
        if in_conversation:
            previous = self._last_item_id()
            self._store(stored)
            self._item_added(item, previous)
        part: dict[str, Any] = {"type": "audio", "transcript": ""} if with_audio else {"type": "text", "text": ""}
        item["content"].append({"type": part_type, "transcript": ""} if with_audio else {"type": part_type, "text": ""})
        self._emit(
            ev.RESPONSE_CONTENT_PART_ADDED,
            response_id=resp_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=part,
        )

    def _chunk_bytes(self, fmt: AudioFormat) -> int:
        return fmt.rate * CHUNK_MS // 1000 * 2

    def _function_call_response(
        self,
        resp_id: str,
        item_id: str,
        calls: list[tuple[str, str]],
        modalities: list[str],
        params: dict[str, Any],
        in_conversation: bool,
        input_tokens: int,
    ) -> None:
        """One response whose output is a function_call item per (name, arguments), streamed in order."""
        resp: LiveResponse | None = None
        outputs: list[dict[str, Any]] = []
        for index, (tool, arguments) in enumerate(calls):
            call_id = self._mint("call")
            self._calls[call_id] = tool
            item: dict[str, Any] = {
                "id": item_id if index == 0 else self._mint("item"),
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": tool,
                "call_id": call_id,
                "arguments": "",
            }
            if resp is None:
                resp = LiveResponse(
                    id=resp_id,
                    modalities=modalities,
                    metadata=params.get("metadata"),
                    in_conversation=in_conversation,
                    out_fmt=output_format(self.config),
                    voice=self.config["audio"]["output"]["voice"],
                    text="",
                    audio=None,
                    item=item,
                    stored=StoredItem(item=item),
                    text_chunks=[],
                    input_tokens=input_tokens,
                )
                self._emit(ev.RESPONSE_CREATED, response=self._response_object(resp, "in_progress", None, None))
            ids = {"response_id": resp_id, "output_index": index}
            self._emit(ev.RESPONSE_OUTPUT_ITEM_ADDED, **ids, item=copy.deepcopy(item))
            previous = self._last_item_id()
            if in_conversation:
                self._store(resp.stored if index == 0 else StoredItem(item=item))
                self._item_added(item, previous)
            ids = {**ids, "item_id": item["id"], "call_id": call_id}
            self._emit(ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA, **ids, delta=arguments)
            self._emit(ev.RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE, **ids, name=tool, arguments=arguments)
            item["arguments"] = arguments
            item["status"] = "completed"
            if in_conversation:
                self._item_done(item, previous)
                self._complete(item)
            self._emit(ev.RESPONSE_OUTPUT_ITEM_DONE, response_id=resp_id, output_index=index, item=copy.deepcopy(item))
            outputs.append(copy.deepcopy(item))
        assert resp is not None
        resp.output = outputs
        usage = self._usage(resp, 0.0, "".join(arguments for _, arguments in calls))
        self._emit(ev.RESPONSE_DONE, response=self._response_object(resp, "completed", {"type": "completed"}, usage))

    def _usage(self, resp: LiveResponse, audio_ms: float, text: str) -> dict[str, Any]:
        out_audio, out_text = replies.audio_tokens(audio_ms), replies.text_tokens(text)
        return {
            "total_tokens": resp.input_tokens + out_audio + out_text,
            "input_tokens": resp.input_tokens,
            "output_tokens": out_audio + out_text,
            "input_token_details": {"text_tokens": 0, "audio_tokens": resp.input_tokens, "cached_tokens": 0},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    def step_response(self) -> float:
        """Emit the next chunk of the live response (or its end); the ms of audio emitted, for pacing."""
        resp = self._response
        if resp is None:
            return 0.0
        ids = {"response_id": resp.id, "item_id": resp.item["id"], "output_index": 0, "content_index": 0}
        sent_ms = 0.0
        if resp.with_audio and resp.audio is not None and resp.cursor < len(resp.audio):
            chunk = resp.audio[resp.cursor : resp.cursor + self._chunk_bytes(resp.out_fmt)]
            resp.cursor += len(chunk)
            assert resp.stored.audio is not None
            resp.stored.audio += chunk
            self._emit(
                ev.RESPONSE_OUTPUT_AUDIO_DELTA,
                **ids,
                delta=base64.b64encode(resp.out_fmt.from_pcm16(chunk)).decode("ascii"),
            )
            sent_ms = pcm.duration_ms(len(chunk), resp.out_fmt.rate)
        if resp.text_cursor < len(resp.text_chunks):
            delta = resp.text_chunks[resp.text_cursor]
            resp.text_cursor += 1
            if delta:
                resp.sent_text += delta
                self._emit(self._text_delta_type(resp), **ids, delta=delta)
        elif not resp.with_audio or resp.audio is None or resp.cursor >= len(resp.audio):
            self._finish_response("completed", None)
        return sent_ms

    def _text_delta_type(self, resp: LiveResponse) -> str:
        if resp.with_audio and self.flavour == "openai":
            return ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA
        return ev.RESPONSE_OUTPUT_TEXT_DELTA

    def _cancel_response(self, reason: str) -> None:
        self._finish_response("cancelled", reason)

    def _finish_response(self, status: str, reason: str | None) -> None:
        resp = self._response
        if resp is None:
            return
        self._response = None
        ids = {"response_id": resp.id, "item_id": resp.item["id"], "output_index": 0, "content_index": 0}
        text = resp.sent_text
        if resp.with_audio:
            self._emit(ev.RESPONSE_OUTPUT_AUDIO_DONE, **ids)
            if self.flavour == "openai":
                self._emit(ev.RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE, **ids, transcript=text)
            else:
                self._emit(ev.RESPONSE_OUTPUT_TEXT_DONE, **ids, text=text)
            resp.item["content"][0]["transcript"] = text
            part: dict[str, Any] = {"type": "audio", "transcript": text}
        else:
            self._emit(ev.RESPONSE_OUTPUT_TEXT_DONE, **ids, text=text)
            resp.item["content"][0]["text"] = text
            part = {"type": "text", "text": text}
        self._emit(ev.RESPONSE_CONTENT_PART_DONE, **ids, part=part)
        resp.item["status"] = "completed" if status == "completed" else "incomplete"
        if resp.in_conversation and resp.item["id"] in self.items:
            self._item_done(resp.item, self._previous_id(resp.item["id"]))
            self._complete(resp.item)
        self._emit(ev.RESPONSE_OUTPUT_ITEM_DONE, response_id=resp.id, output_index=0, item=copy.deepcopy(resp.item))
        resp.output = [copy.deepcopy(resp.item)]
        audio_ms = resp.stored.audio_ms()
        details: dict[str, Any] = {"type": status}
        if reason is not None:
            details["reason"] = reason
        self._emit(
            ev.RESPONSE_DONE,
            response=self._response_object(resp, status, details, self._usage(resp, audio_ms, text)),
        )
