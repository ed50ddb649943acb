"""Running server-side tool handlers for one session: off the event loop, bounded in time and output.

`SessionTools` is the asyncio side of a session's tools, held by the bridge: `start(call)` runs a handler in
its own task (at most `ToolSet.max_running` at once per session; the others wait their turn), and reports the
`ToolOutcome` through the `on_finished` callback; `arm_hold` starts a hold timer; `aclose()` at session end
cancels what still runs (async handlers are cancelled, sync ones abandoned on their thread, their result
dropped) and reports those calls as `cancelled`.
Handlers: `python:` ones are called with (arguments, ToolContext); async ones run on the handlers' own event loop
(one daemon thread for the process), sync ones each on a daemon thread, so neither a handler that blocks nor one
that ignores its cancellation can stall the relay's loop or delay the process's exit; `http:` ones get a POST of
`{name, arguments, call_id, session_id}` and their response body is the output. Errors, timeouts and outputs
that are not JSON-serializable become `{"error": ...}` outputs, never exceptions. See docs/tools.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiohttp
import structlog

from relay.core.toolset import ToolCall, ToolOutcome, ToolSet, ToolSpec, error_output
from relay.tools.context import ToolContext

log = structlog.get_logger()

OUTPUT_CUT_NOTE: Final = "\n[output cut by the relay: longer than {limit} bytes]"
HTTP_ERROR_BODY_CHARS: Final = 300


class ToolFailed(Exception):
    """A handler ran but gave nothing usable (an http error status, an unserializable value)."""


def cap_output(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its head (cut on a character boundary) and a note."""
    data = text.encode("utf-8", "surrogatepass")  # a handler may return a lone surrogate; it is still measured
    if len(data) <= limit:
        return text
    note = OUTPUT_CUT_NOTE.format(limit=limit)
    head = data[: max(0, limit - len(note.encode()))].decode(errors="ignore")
    return head + note


def output_text(value: Any) -> str:
    """A handler's return value as the output string: a str as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolFailed(f"the handler returned a value that is not JSON-serializable: {exc}") from None


_handler_loop_lock = threading.Lock()
_handler_loop: asyncio.AbstractEventLoop | None = None


def handler_loop() -> asyncio.AbstractEventLoop:
    """The event loop async handlers run on: started on first use, on a daemon thread, shared by every session.

    Off the relay's loop, an async handler that calls something blocking (a sync HTTP client, a slow file) holds
    up only the other handlers, not the sessions' audio; and one that ignores its cancellation keeps running
    there, harmlessly, instead of holding the relay's loop open at shutdown (which waits for every task of its
    own loop)."""
    global _handler_loop
    with _handler_loop_lock:
        if _handler_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="relay-tool-loop", daemon=True).start()
            _handler_loop = loop
        return _handler_loop


async def _on_handler_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await `coroutine` run on `handler_loop()`; cancelling the caller cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_contained(coroutine), handler_loop()))


def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run a sync handler on its own daemon thread; the future gets its result (or is simply dropped)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return  # cancelled or timed out: the result is dropped
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # the handler's failure is reported, whatever it is (see `_contained`)
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="relay-tool", daemon=True).start()
    return future


class SessionTools:
    """The handlers of one session's server-tool calls (see the module docstring)."""

    def __init__(
        self,
        tools: ToolSet,
        session_id: str,
        on_finished: Callable[[ToolCall, ToolOutcome], None],
        *,
        on_metrics: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.tools = tools
        self.session_id = session_id
        self._on_finished = on_finished
        self._on_metrics = on_metrics
        self._slots = asyncio.Semaphore(tools.max_running)
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self._abandoned: set[asyncio.Future[Any]] = set()  # timed-out calls whose tasks here still unwind

    def start(self, call: ToolCall) -> None:
        if self._closed:  # the session has ended: nothing new may run (or log) after it
            log.warning("relay.tool_call_dropped", tool=call.name, call_id=call.call_id, reason="session_closed")
            return
        task = asyncio.create_task(self._run(call), name=f"{self.session_id}:tool:{call.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def arm_hold(self, seconds: float, on_expired: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(seconds, on_expired))

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Cancel every call still running (each is reported `cancelled`), stop timers, close the HTTP pool."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self, call: ToolCall) -> None:
        started = time.monotonic()
        try:
            async with self._slots:
                started = time.monotonic()
                outcome = await self._outcome(call)
        except asyncio.CancelledError:
            outcome = ToolOutcome("cancelled", error_output("the session ended while the tool ran"), _ms(started))
        except Exception as exc:  # a relay bug must not end the session: the model still gets an answer
            log.exception("relay.tool_runner_failed", tool=call.name, call_id=call.call_id)
            outcome = ToolOutcome("error", error_output(f"relay error: {type(exc).__name__}"), _ms(started))
        if self._on_metrics is not None:
            self._on_metrics(call.name, outcome.result, outcome.duration_ms / 1000.0)
        self._on_finished(call, outcome)

    async def _outcome(self, call: ToolCall) -> ToolOutcome:
        started = time.monotonic()
        limit = self.tools.max_output_bytes
        spec = self.tools.get(call.name)
        if spec is None:
            return ToolOutcome("error", error_output(f"no server tool named {call.name!r}"), 0.0)
        if call.arguments is None:
            return ToolOutcome("error", cap_output(error_output(call.problem or "unusable arguments"), limit), 0.0)
        try:
            value = await self._within(self._invoke(spec, call), spec.timeout_seconds)
            output = output_text(value)
        except TimeoutError:
            message = f"the tool did not answer within {spec.timeout_seconds:g} s"
            return ToolOutcome("timeout", error_output(message), _ms(started))
        except ToolFailed as exc:
            return ToolOutcome("error", cap_output(error_output(str(exc)), limit), _ms(started))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the handler's exception is the model's to hear about, not a relay failure
            return ToolOutcome("error", cap_output(error_output(f"{type(exc).__name__}: {exc}"), limit), _ms(started))
        return ToolOutcome("ok", cap_output(output, limit), _ms(started))

    async def _within(self, invocation: Coroutine[Any, Any, Any], seconds: float) -> Any:
        """The invocation's value, or TimeoutError once `seconds` have passed. A handler still running then is
        cancelled and left behind: one that ignores the cancellation does not stretch the timeout (as it would
        with `asyncio.wait_for`, which waits for the cancelled task to finish), and its value is dropped."""
        task = asyncio.ensure_future(_contained(invocation))
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(_forget_abandoned(self._abandoned))
            raise TimeoutError
        return task.result()

    async def _invoke(self, spec: ToolSpec, call: ToolCall) -> Any:
        assert call.arguments is not None
        if spec.kind == "http":
            return await self._post(spec, call)
        assert spec.function is not None
        context = ToolContext(session_id=self.session_id, call_id=call.call_id, tool=call.name)
        if inspect.iscoroutinefunction(spec.function):
            return await _on_handler_loop(spec.function(call.arguments, context))
        result = await _in_daemon_thread(spec.function, call.arguments, context)
        if asyncio.iscoroutine(result):  # a sync callable handing back a coroutine: run it like an async handler
            return await _on_handler_loop(result)
        if inspect.isawaitable(result):
            return await result
        return result

    async def _post(self, spec: ToolSpec, call: ToolCall) -> str:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        body = {"name": call.name, "arguments": call.arguments, "call_id": call.call_id, "session_id": self.session_id}
        limit = self.tools.max_output_bytes
        try:
            async with self._http.post(spec.url, json=body, headers=dict(spec.headers), allow_redirects=False) as response:
                # Never more than the output cap (plus one byte, to know it was longer) is read.
                data = await response.content.read(limit + 1)
                while len(data) <= limit:
                    more = await response.content.read(limit + 1 - len(data))
                    if not more:
                        break
                    data += more
                text = data.decode(errors="replace")
                if not 200 <= response.status < 300:
                    raise ToolFailed(f"the tool's server answered HTTP {response.status}: {text[:HTTP_ERROR_BODY_CHARS]}")
                return text  # one byte over the cap when more followed: cap_output cuts it and says so
        except aiohttp.ClientError as exc:
            raise ToolFailed(f"the tool's server could not be reached: {type(exc).__name__}: {exc}") from None


async def _contained(invocation: Coroutine[Any, Any, Any]) -> Any:
    """Whatever the handler raises, caught inside its task as the tool's error, whether raised by an async handler
    or handed over from a sync one's thread, except the cancellation the relay itself asked for (the session
    ended, the time ran out). A task that raises `SystemExit`/`KeyboardInterrupt` re-raises it out of its event
    loop; a `CancelledError` the handler raised on its own (it awaited something someone else cancelled) would
    read as the session's end; any other `BaseException` would escape every `except Exception`."""
    try:
        return await invocation
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the relay cancelled this call
        raise _as_failure(exc) from None
    except Exception:
        raise
    except BaseException as exc:
        raise _as_failure(exc) from None


def _as_failure(exc: BaseException) -> ToolFailed:
    """A handler's `BaseException` as the tool's error: a handler never ends the relay or the session."""
    return ToolFailed(f"the handler raised {type(exc).__name__}{f': {exc}' if str(exc) else ''}")


def _forget_abandoned(abandoned: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def forget(task: asyncio.Future[Any]) -> None:
        abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure of an abandoned handler is not reported as unhandled

    return forget


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
