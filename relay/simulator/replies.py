"""What the simulated model says: echo audio, deterministic transcripts and texts, tool calls, retrieval.

There is no recognizer and no language model: replies are derived from the input so a person hears the loop
work and a test can check it. Rules (README documents them):
- Audio turn -> the assistant audio is a short tone (`TONE_MS` at `TONE_HZ`), `GAP_MS` of silence, then the
  user's utterance resampled to the output rate; its text is "Echo of [speech N.NN s]." and the user item's
  transcript is "[speech N.NN s]" (N = the utterance's duration in seconds).
- Text turn -> 'You said: "<text>".'; a response on an empty conversation -> `GREETING`; after a
  function_call_output -> 'Tool <name> returned: <output>', one per output of the run of outputs that ends the
  conversation, in order (a response with several calls). When audio is asked for, such a text is
  "spoken" as one short tone per word (`speak_text`), for its first `MAX_SPOKEN_WORDS` words (about a minute:
  a client's 12 MB text must not make the simulator synthesize days of audio).
- A user text containing `call <tool_name>` for a configured tool -> a function_call whose arguments are the
  JSON object written right after the name (`call get_time {"tz": "UTC"}`), else "{}"; every such `call` in
  one text is one function_call of the same response, in order.
- A user text containing `recall` -> the texts of the earlier user messages of the conversation, in order
  (`recall_reply`), so a test can see which context reached the model.
- Retrieved audio is peak-normalized to -1 dBFS (`post_process`), so it differs checkably from the deltas.
Pure functions over bytes and strings; no I/O.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from audio import pcm

TONE_HZ: Final = 880.0
TONE_MS: Final = 150
GAP_MS: Final = 50
ECHO_LEAD_MS: Final = TONE_MS + GAP_MS  # where the echoed utterance starts in the reply audio
PEAK_DBFS: Final = -1.0
GREETING: Final = "Hello! This is the realtime simulator. Say something and I will echo it."
_WORD_MS: Final = 120
_WORD_GAP_MS: Final = 40
MAX_SPOKEN_WORDS: Final = 400
_TOOL_CALL: Final = re.compile(r"\bcall\s+([A-Za-z0-9_.-]+)", re.IGNORECASE)


def _tone(rate: int, ms: int, hz: float, amplitude: float) -> np.ndarray:
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    wave = amplitude * np.sin(2.0 * np.pi * hz * t)
    ramp = min(n // 2, rate // 100)  # 10 ms fades: no clicks
    if ramp:
        fade = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= fade
        wave[n - ramp :] *= fade[::-1]
    return wave.astype(np.float32)


def _silence(rate: int, ms: int) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.float32)


def echo_audio(utterance: bytes, in_rate: int, out_rate: int) -> bytes:
    """The reply to an audio turn: tone, gap, the utterance (PCM16 at in_rate) resampled to out_rate."""
    lead = np.concatenate([_tone(out_rate, TONE_MS, TONE_HZ, 0.3), _silence(out_rate, GAP_MS)])
    return pcm.float_to_pcm16(lead) + pcm.resample_pcm16(utterance, in_rate, out_rate)


def speak_text(text: str, rate: int) -> bytes:
    """A deterministic stand-in for speech synthesis: one short tone per word, pitch from the word, for the first
    `MAX_SPOKEN_WORDS` words."""
    words = text.split(maxsplit=MAX_SPOKEN_WORDS)[:MAX_SPOKEN_WORDS] or [""]
    # any JSON string, lone surrogates too
    return b"".join(_spoken_word(rate, 300 + zlib.crc32(word.encode("utf-8", "surrogatepass")) % 500) for word in words)


@functools.lru_cache(maxsize=1024)
def _spoken_word(rate: int, hz: int) -> bytes:
    """One word's tone and the silence after it, as PCM16 (500 pitches per rate: each made once)."""
    return pcm.float_to_pcm16(np.concatenate([_tone(rate, _WORD_MS, float(hz), 0.25), _silence(rate, _WORD_GAP_MS)]))


def describe_speech(duration_ms: float) -> str:
    """The user item's transcript for an utterance (there is no recognizer)."""
    return f"[speech {duration_ms / 1000.0:.2f} s]"


def echo_text(transcript: str) -> str:
    return f"Echo of {transcript}."


def text_reply(user_text: str) -> str:
    return f'You said: "{user_text}".'


_RECALL: Final = re.compile(r"\brecall\b", re.IGNORECASE)


def asks_recall(text: str) -> bool:
    return _RECALL.search(text) is not None


def recall_reply(earlier: Iterable[str]) -> str:
    """'Earlier you said: "a" | "b".' from the earlier user texts in order (or a sentence saying there were none)."""
    said = [f'"{text}"' for text in earlier]
    if not said:
        return "You have not said anything earlier."
    return "Earlier you said: " + " | ".join(said) + "."


def tool_result_reply(name: str, output: str) -> str:
    return f"Tool {name} returned: {output}"


def find_tool_call(text: str, tools: Iterable[dict[str, Any]]) -> str | None:
    """The tool a user text asks for by the rule `call <tool_name>`, if that tool is configured."""
    calls = find_tool_calls(text, tools)
    return calls[0][0] if calls else None


def find_tool_calls(text: str, tools: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every `call <tool_name> [{json}]` of a user text for a configured tool: (name, arguments JSON text)."""
    names = {tool.get("name") for tool in tools}
    decoder = json.JSONDecoder()
    calls: list[tuple[str, str]] = []
    for match in _TOOL_CALL.finditer(text):
        if match.group(1) not in names:
            continue
        start = match.end()
        while start < len(text) and text[start].isspace():
            start += 1
        arguments = "{}"
        if text.startswith("{", start):
            try:
                value, end = decoder.raw_decode(text, start)
            except ValueError:
                value, end = None, start
            if isinstance(value, dict):
                arguments = text[start:end]
        calls.append((match.group(1), arguments))
    return calls


def post_process(samples: bytes) -> bytes:
    """The server-side processing a retrieve shows: peak-normalized to PEAK_DBFS (silence stays silence)."""
    if not samples:
        return samples
    data = pcm.pcm16_to_float(samples)
    peak = float(np.max(np.abs(data)))
    if peak == 0.0:
        return samples
    gain = (10.0 ** (PEAK_DBFS / 20.0)) / peak
    return pcm.float_to_pcm16(data * gain)


def split_text(text: str, parts: int) -> list[str]:
    """`text` cut at word boundaries into at most `parts` deltas whose concatenation is `text`."""
    if parts <= 1 or not text:
        return [text] if text else []
    words = re.findall(r"\S+\s*|\s+", text)
    per = max(1, -(-len(words) // parts))
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def text_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def audio_tokens(duration_ms: float) -> int:
    # Roughly what OpenAI bills (about 10 audio tokens per second); only the shape matters here.
    return max(0, round(duration_ms / 100.0))
