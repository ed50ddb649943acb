"""Browser tier, unit level: the page's PCM16, G.711 and resampling code (relay/static/pcm16.js) and the
close/event helpers of relay-client.js, run inside Chromium.

The module is imported from the relay's own /static/ route (the way the page loads it) and checked against the
Python side of the project: `audio.pcm` for base64/G.711, soxr for resampling quality.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soxr

from audio import pcm
from tests.support.page_fixtures import RelayProcess, chromium_args, require_chromium, start_relay
from tests.support.timing import seconds

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

IMPORT = "const m = await import('/static/pcm16.js');"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    process = start_relay(tmp_path_factory.mktemp("pcm_relay"))
    yield process
    process.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(relay: RelayProcess) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=require_chromium(), args=chromium_args(None))
        p = await browser.new_page()
        p.set_default_timeout(seconds(10) * 1000)
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        await p.goto(relay.url)
        yield p
        await browser.close()
        assert errors == [], errors


async def run(page: Any, body: str, arg: Any = None) -> Any:
    """Evaluate `body` (with the module bound to `m`) as an async function of `arg` in the page."""
    return await page.evaluate(f"async (arg) => {{ {IMPORT} {body} }}", arg)


def tone(rate: int, hz: float, seconds_: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds_)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


async def test_float_samples_become_rounded_clamped_pcm16(page: Any) -> None:
    out = await run(
        page, "return Array.from(m.floatToPcm16(arg.map(Number)));", [0, 0.5, -0.5, 1.0, -1.0, 1.5, -2, 3 / 65536, "NaN"]
    )
    assert out == [0, 16384, -16384, 32767, -32768, 32767, -32768, 2, 0]


async def test_pcm16_base64_matches_the_python_encoding_both_ways(page: Any) -> None:
    values = np.random.default_rng(7).integers(-32768, 32767, 1001, dtype=np.int16)
    expected = pcm.encode_base64_audio(values.astype("<i2").tobytes())
    result = await run(
        page,
        """const pcm = Int16Array.from(arg.values);
           return { encoded: m.bytesToBase64(m.pcm16ToBytes(pcm)),
                    viaFloat: m.floatToBase64Pcm16(m.pcm16ToFloat(pcm)),
                    decoded: Array.from(m.bytesToPcm16(m.base64ToBytes(arg.expected))) };""",
        {"values": values.tolist(), "expected": expected},
    )
    assert result["encoded"] == expected
    assert result["viaFloat"] == expected
    assert result["decoded"] == values.tolist()


async def test_base64_garbage_throws_and_an_odd_trailing_byte_is_dropped(page: Any) -> None:
    result = await run(
        page,
        """let threw = false;
           try { m.base64ToBytes('@@ not base64 @@'); } catch (e) { threw = true; }
           return { threw, odd: Array.from(m.bytesToPcm16(new Uint8Array([1, 0, 255, 255, 7]))) };""",
    )
    assert result == {"threw": True, "odd": [1, -1]}


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
async def test_g711_matches_audio_pcm_for_every_sample_and_byte(page: Any, law: str) -> None:
    every_sample = np.arange(-32768, 32768, dtype=np.int16)
    encode = pcm.ulaw_encode if law == "ulaw" else pcm.alaw_encode
    decode = pcm.ulaw_decode if law == "ulaw" else pcm.alaw_decode
    expected_bytes = encode(every_sample.astype("<i2").tobytes())
    expected_samples = np.frombuffer(decode(bytes(range(256))), dtype="<i2")
    result = await run(
        page,
        """const enc = arg.law === 'ulaw' ? m.linearToUlaw : m.linearToAlaw;
           const dec = arg.law === 'ulaw' ? m.ulawToLinear : m.alawToLinear;
           const bytes = new Uint8Array(65536);
           for (let i = 0; i < 65536; i++) bytes[i] = enc(i - 32768);
           const samples = [];
           for (let b = 0; b < 256; b++) samples.push(dec(b));
           return { encoded: m.bytesToBase64(bytes), decoded: samples };""",
        {"law": law},
    )
    assert base64.b64decode(result["encoded"]) == expected_bytes
    assert result["decoded"] == expected_samples.tolist()


async def test_wire_codec_reads_the_session_format_and_refuses_unknown_ones(page: Any) -> None:
    result = await run(
        page,
        "return arg.map((f) => m.wireCodec(f));",
        [
            {"type": "audio/pcm", "rate": 44100},
            {"type": "audio/pcm"},
            {"type": "audio/pcmu"},
            {"type": "audio/pcma", "rate": 24000},
            {"type": "audio/pcm", "rate": "fast"},
            {"type": "audio/pcm", "rate": 12.5},
            {"type": "audio/opus", "rate": 48000},
            None,
            "audio/pcm",
            [],
        ],
    )
    assert result == [
        {"type": "audio/pcm", "rate": 44100},
        {"type": "audio/pcm", "rate": 24000},
        {"type": "audio/pcmu", "rate": 8000},
        {"type": "audio/pcma", "rate": 8000},
        None,
        None,
        None,
        None,
        None,
        None,
    ]


RESAMPLE = """const x = new Float32Array(m.base64ToBytes(arg.samples).buffer);
              return m.bytesToBase64(new Uint8Array(m.resample(x, arg.from, arg.to).buffer));"""


async def resample_in_page(page: Any, signal: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Float32 samples cross the page boundary as base64 (JSON arrays of 44100 numbers are slow)."""
    encoded = base64.b64encode(signal.astype("<f4").tobytes()).decode()
    out = await run(page, RESAMPLE, {"samples": encoded, "from": src, "to": dst})
    return np.frombuffer(base64.b64decode(out), dtype="<f4").astype(np.float64)


async def test_resampling_keeps_a_tone_below_the_new_nyquist(page: Any) -> None:
    signal = tone(48000, 1000.0, 0.5)
    out = await resample_in_page(page, signal, 48000, 24000)
    assert len(out) == 12000
    body = out[1000:-1000]  # away from the edges, where the filter sees the implicit zeros
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    peak_hz = np.argmax(spectrum) * 24000 / len(body)
    assert abs(peak_hz - 1000.0) < 5
    rms_db = 20 * np.log10(np.sqrt(np.mean(body**2)) / (0.5 / np.sqrt(2)))
    assert abs(rms_db) < 0.1


async def test_downsampling_removes_what_would_alias(page: Any) -> None:
    signal = tone(48000, 15000.0, 0.5)  # above 12 kHz: would fold to 9 kHz without the low-pass
    out = await resample_in_page(page, signal, 48000, 24000)
    body = out[1000:-1000]
    level_db = 20 * np.log10(np.sqrt(np.mean(body**2)) / (0.5 / np.sqrt(2)) + 1e-12)
    assert level_db < -60


@pytest.mark.parametrize(("src", "dst"), [(44100, 24000), (48000, 16000), (24000, 48000), (24000, 44100)])
async def test_resampling_agrees_with_soxr(page: Any, src: int, dst: int) -> None:
    rng = np.random.default_rng(src + dst)
    t = np.arange(src) / src  # one second of a few tones well inside both bands
    freqs = rng.uniform(100, 0.4 * min(src, dst), 6)
    signal = (sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs) * 0.1).astype(np.float32)
    out = await resample_in_page(page, signal, src, dst)
    reference = soxr.resample(signal, src, dst, quality="VHQ")
    assert len(out) == int(np.ceil(src * dst / src))
    edge = dst // 20  # compare away from the edges, where both filters see implicit zeros
    a, b = out[edge:-edge], reference[edge : len(out) - edge]
    snr_db = 10 * np.log10(np.sum(b**2) / np.sum((a - b) ** 2))
    assert snr_db > 60


async def test_streaming_in_render_quanta_equals_converting_at_once(page: Any) -> None:
    noise = np.random.default_rng(3).uniform(-0.5, 0.5, 44100 // 4).astype(np.float32)
    result = await run(
        page,
        """const x = Float32Array.from(arg);
           const whole = new m.StreamingResampler(44100, 24000);
           const once = [...whole.process(x), ...whole.flush()];
           const streamed = new m.StreamingResampler(44100, 24000);
           const parts = [];
           for (let i = 0; i < x.length; i += 128) parts.push(...streamed.process(x.subarray(i, i + 128)));
           parts.push(...streamed.flush());
           return { once, parts };""",
        noise.tolist(),
    )
    once, parts = np.array(result["once"]), np.array(result["parts"])
    assert len(once) == len(parts) >= int(np.ceil(len(noise) * 24000 / 44100))
    assert np.max(np.abs(once - parts)) < 1e-6


async def test_resampler_refuses_rates_that_are_not_positive_integers(page: Any) -> None:
    result = await run(
        page,
        """return arg.map(([a, b]) => {
             try { new m.StreamingResampler(a, b); return 'accepted'; } catch (e) { return e.name; }
           });""",
        [[0, 24000], [44100.5, 24000], [24000, -8000], ["24000", 16000], [None, 16000]],
    )
    assert result == ["RangeError"] * 5


@pytest.mark.parametrize(("rate", "sizes"), [(24000, {480}), (44100, {882}), (16000, {320}), (11025, {220, 221})])
async def test_chunker_cuts_20_ms_chunks_at_the_session_rate(page: Any, rate: int, sizes: set[int]) -> None:
    result = await run(
        page,
        """const c = new m.Chunker(arg, 20);
           const sizes = [];
           // one second fed in uneven pieces, like resampled render quanta
           for (let fed = 0, k = 0; fed < arg; k++) {
             const n = Math.min(arg - fed, 97 + (k % 5) * 13);
             for (const chunk of c.push(new Float32Array(n))) sizes.push(chunk.length);
             fed += n;
           }
           return sizes;""",
        rate,
    )
    assert len(result) == 50
    assert sum(result) == rate
    assert set(result) == sizes


async def test_event_summaries_never_carry_audio_payloads(page: Any) -> None:
    audio = base64.b64encode(b"\x01\x02" * 480).decode()
    result = await page.evaluate(
        """async (audio) => {
             const c = await import('/static/relay-client.js');
             return [
               c.summarizeEvent({type: 'input_audio_buffer.append', audio}, 24000),
               c.summarizeEvent({type: 'response.output_audio.delta', delta: audio, item_id: 'i'}, 24000),
               c.summarizeEvent({type: 'conversation.item.retrieved',
                                 item: {id: 'i', content: [{type: 'output_audio', audio, transcript: 'hi'}]}}),
             ];
           }""",
        audio,
    )
    assert audio not in str(result)
    assert result[0]["audio"] == {"audio_bytes": 960, "audio_ms": 20}
    assert result[1]["delta"] == {"audio_bytes": 960, "audio_ms": 20}
    assert result[2]["item"]["content"][0] == {"type": "output_audio", "audio": {"audio_bytes": 960}, "transcript": "hi"}


async def test_relay_close_codes_are_named_plainly(page: Any) -> None:
    kinds = await page.evaluate(
        """async (cases) => {
             const { RelayClient } = await import('/static/relay-client.js');
             return cases.map(([code, reason, lastError]) => {
               const c = new RelayClient();
               c.lastError = lastError;
               return c.closeKind(code, reason);
             });
           }""",
        [
            [1008, "client_too_slow", None],
            [1008, "", None],
            [1013, "too_many_sessions", None],
            [1013, "", "upstream_unavailable"],
            [1014, "", None],
            [1000, "", "session_expired"],
            [1000, "", None],
            [1001, "", None],
            [1006, "", None],
            [4000, "garbage reason \u0000", "not_a_code"],
            [4000, "toString", "__proto__"],
        ],
    )
    assert kinds == [
        "client_too_slow",
        "client_too_slow",
        "too_many_sessions",
        "upstream_unavailable",
        "upstream_disconnected",
        "session_expired",
        "normal",
        "normal",
        "closed",
        "closed",
        "closed",
    ]


async def test_garbage_server_frames_are_ignored_without_events(page: Any) -> None:
    result = await page.evaluate(
        """async (frames) => {
             const { RelayClient } = await import('/static/relay-client.js');
             const c = new RelayClient();
             await c.ensureAudio();  // a live playback worklet, so audio deltas are really decoded
             c.applySession({audio: {output: {format: {type: 'audio/pcm', rate: 24000}}}});
             const seen = [];
             c.addEventListener('server', (e) => seen.push(e.detail.event.type));
             c.addEventListener('transcript', (e) => seen.push('transcript:' + e.detail.text));
             for (const f of frames) c.onMessage(f);
             c.onMessage(new ArrayBuffer(8));
             c.onMessage(JSON.stringify({type: 'conversation.item.input_audio_transcription.completed',
                                         item_id: 'u1', transcript: 'hello'}));
             c.releaseAudio();
             return seen;
           }""",
        [
            "not json",
            "[]",
            "null",
            '{"type": 5}',
            '{"no_type": true}',
            '{"type": "session.updated", "session": "not an object"}',
            '{"type": "response.output_audio.delta", "delta": "@@@ not base64", "item_id": "a"}',
            '{"type": "response.output_text.delta", "delta": 42, "item_id": "a"}',
            '{"type": "error"}',
        ],
    )
    # Only well-formed events are dispatched; their bad fields (audio that is not base64, a non-string delta, an
    # error without a body) are ignored, and the next good event still works.
    assert result == [
        "session.updated",
        "response.output_audio.delta",
        "response.output_text.delta",
        "error",
        "transcript:hello",
        "conversation.item.input_audio_transcription.completed",
    ]


async def test_the_microphone_switches_format_as_its_session_update_goes_out(page: Any) -> None:
    # The server reads the appends after a session.update in the format it asks for: the page encodes them so from
    # then on, and goes back when an error names that update.
    result = await page.evaluate(
        """async () => {
             const { RelayClient } = await import('/static/relay-client.js');
             const c = new RelayClient();
             c.ws = { readyState: WebSocket.OPEN, send() {} };  // a socket that takes every frame
             c.applySession({audio: {input: {format: {type: 'audio/pcm', rate: 24000}}}});
             const rates = [];
             const note = () => rates.push(`${c.inputCodec.type} ${c.inputCodec.rate}`);
             const update = (id, format) => c.send({type: 'session.update', event_id: id,
                                                    session: {audio: {input: {format}}}});
             update('e1', {type: 'audio/pcm', rate: 16000}); note();
             c.onMessage(JSON.stringify({type: 'error', error: {type: 'invalid_request_error', event_id: 'e1'}})); note();
             update('e2', {type: 'audio/pcmu'}); note();
             c.onMessage(JSON.stringify({type: 'session.updated',
                                         session: {audio: {input: {format: {type: 'audio/pcmu'}}}}})); note();
             c.send({type: 'session.update', session: {instructions: 'no format here'}}); note();
             return {rates, waiting: c.updatesInFlight.size};
           }"""
    )
    assert result == {
        "rates": ["audio/pcm 16000", "audio/pcm 24000", "audio/pcmu 8000", "audio/pcmu 8000", "audio/pcmu 8000"],
        "waiting": 0,
    }
