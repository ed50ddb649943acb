// PCM16 and resampling for the browser side of realtime-relay.
//
// Boundary: pure functions and small stateful converters over typed arrays. No DOM, no Web Audio, no network:
// this module is imported by relay-client.js on the main thread and by the in-browser unit tests.
//
// Wire audio in the realtime protocol is raw PCM, signed 16-bit, mono, little-endian, base64 in JSON, at the rate
// the session's effective config names (audio/pcm) or G.711 at 8 kHz (audio/pcmu, audio/pcma). The browser's
// AudioContext runs at the device's rate (often 48000), so both directions need a resampler. `StreamingResampler`
// is a windowed-sinc (Kaiser) polyphase filter: the cut-off sits below the lower Nyquist of the two rates, so
// downsampling does not alias, and it keeps its history between chunks, so a stream cut into 128-frame blocks
// converts exactly like the whole signal at once.

/** Float samples in [-1, 1] -> Int16Array (rounded, clamped). */
export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    // NaN would otherwise become 0 silently via the Int16Array store; make that explicit.
    const v = Number.isFinite(s) ? Math.round(s * 32768) : 0;
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

/** Int16Array -> Float32Array in [-1, 1). */
export function pcm16ToFloat(samples) {
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}

/** Int16Array -> little-endian bytes, whatever the platform's endianness. */
export function pcm16ToBytes(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  return bytes;
}

/** Little-endian bytes -> Int16Array. A trailing odd byte (not a whole sample) is dropped. */
export function bytesToPcm16(bytes) {
  const n = bytes.length >> 1;
  const out = new Int16Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

/** Bytes -> base64 (btoa over chunks: String.fromCharCode with a huge spread would overflow the stack). */
export function bytesToBase64(bytes) {
  let binary = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

/** base64 -> bytes. Throws on input that is not base64 (atob does). */
export function base64ToBytes(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Float samples -> base64 PCM16 LE, the `audio` of input_audio_buffer.append. */
export function floatToBase64Pcm16(samples) {
  return bytesToBase64(pcm16ToBytes(floatToPcm16(samples)));
}

/** base64 PCM16 LE (an output_audio.delta) -> Float32Array. */
export function base64Pcm16ToFloat(text) {
  return pcm16ToFloat(bytesToPcm16(base64ToBytes(text)));
}

// ---- G.711 (audio/pcmu, audio/pcma at 8 kHz), ITU-T G.711 segment tables --------------------------------

const ULAW_BIAS = 0x84;

/** One PCM16 sample -> mu-law byte (Sun g711.c on 14-bit magnitudes, bit-exact with audio/pcm.py). */
export function linearToUlaw(sample) {
  let v = sample >> 2;
  const mask = v < 0 ? 0x7f : 0xff;
  if (v < 0) v = -v;
  v = Math.min(v, 8159) + 0x21;
  let segment = 0;
  for (let top = v >> 6; top > 0 && segment < 8; top >>= 1) segment++;
  if (segment > 7) return 0x7f ^ mask;
  return (((segment << 4) | ((v >> (segment + 1)) & 0x0f)) ^ mask) & 0xff;
}

/** mu-law byte -> PCM16 sample. */
export function ulawToLinear(byte) {
  const u = ~byte & 0xff;
  const exponent = (u >> 4) & 0x07;
  const mantissa = u & 0x0f;
  const magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
  return u & 0x80 ? -magnitude : magnitude;
}

/** One PCM16 sample -> A-law byte. */
export function linearToAlaw(sample) {
  let s = sample >> 3; // A-law works on 13-bit magnitudes
  let sign = 0x80;
  if (s < 0) {
    sign = 0;
    s = -s - 1;
  }
  let exponent = 0;
  if (s >= 32) {
    exponent = 1;
    for (let v = s >> 5; v > 1 && exponent < 7; v >>= 1) exponent++;
  }
  if (s > 4095) s = 4095;
  const mantissa = exponent === 0 ? (s >> 1) & 0x0f : (s >> exponent) & 0x0f;
  return (sign | (exponent << 4) | mantissa) ^ 0x55;
}

/** A-law byte -> PCM16 sample. */
export function alawToLinear(byte) {
  const a = byte ^ 0x55;
  const exponent = (a >> 4) & 0x07;
  const mantissa = a & 0x0f;
  let magnitude = exponent === 0 ? (mantissa << 4) + 8 : ((mantissa << 4) + 0x108) << (exponent - 1);
  return a & 0x80 ? magnitude : -magnitude;
}

// ---- audio formats of the session -------------------------------------------------------------------------

/**
 * The codec of a session audio format object ({type, rate}) or null when the page cannot handle it.
 * `rate` is what the wire carries; G.711 is always 8 kHz.
 */
export function wireCodec(format) {
  if (!format || typeof format !== "object") return null;
  const type = format.type;
  if (type === "audio/pcm") {
    const rate = Number(format.rate ?? 24000);
    if (!Number.isInteger(rate) || rate < 1000 || rate > 384000) return null;
    return { type, rate };
  }
  if (type === "audio/pcmu" || type === "audio/pcma") return { type, rate: 8000 };
  return null;
}

/** Float samples -> base64 in the session's wire format. */
export function encodeWire(samples, codec) {
  if (codec.type === "audio/pcm") return floatToBase64Pcm16(samples);
  const pcm = floatToPcm16(samples);
  const out = new Uint8Array(pcm.length);
  const encode = codec.type === "audio/pcmu" ? linearToUlaw : linearToAlaw;
  for (let i = 0; i < pcm.length; i++) out[i] = encode(pcm[i]);
  return bytesToBase64(out);
}

/** base64 in the session's wire format -> float samples. */
export function decodeWire(text, codec) {
  if (codec.type === "audio/pcm") return base64Pcm16ToFloat(text);
  const bytes = base64ToBytes(text);
  const decode = codec.type === "audio/pcmu" ? ulawToLinear : alawToLinear;
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = decode(bytes[i]) / 32768;
  return out;
}

// ---- resampling -------------------------------------------------------------------------------------------

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (for the Kaiser window). */
function besselI0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

const MAX_PHASES = 1024;

/**
 * Streaming sample-rate converter: `process(Float32Array)` returns the converted samples available so far;
 * `flush()` returns the tail (the filter's delay line run out with zeros).
 *
 * Output sample n sits at input time n * inRate / outRate. It is the input convolved with a Kaiser-windowed
 * sinc low-pass whose cut-off is `rolloff` times the lower of the two Nyquist frequencies. Rates whose ratio
 * reduces to at most 1024 phases (every common pair: 48000/44100/24000/16000/8000...) use exact phases;
 * other pairs use the nearest of 1024 phases (timing error under 1/2048 of a sample).
 */
export class StreamingResampler {
  constructor(inRate, outRate, { zeroCrossings = 16, rolloff = 0.92, beta = 8.6 } = {}) {
    if (!(Number.isInteger(inRate) && inRate > 0 && Number.isInteger(outRate) && outRate > 0)) {
      throw new RangeError(`rates must be positive integers, got ${inRate} -> ${outRate}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    const g = gcd(inRate, outRate);
    const up = outRate / g; // output samples per `down` input samples
    const down = inRate / g;
    this.exact = up <= MAX_PHASES;
    this.phases = this.exact ? up : MAX_PHASES;
    // Step per output sample in input samples, as (whole, fractional phases) for exact pairs, else a float.
    this.step = down / up;
    this.up = up;
    this.down = down;
    const cutoff = rolloff * Math.min(1, outRate / inRate); // relative to the input Nyquist
    this.half = Math.ceil(zeroCrossings / cutoff); // taps either side, in input samples
    const taps = 2 * this.half;
    this.taps = taps;
    this.kernel = new Float32Array(this.phases * taps);
    const norm = besselI0(beta);
    for (let p = 0; p < this.phases; p++) {
      const frac = p / this.phases;
      let sum = 0;
      for (let j = 0; j < taps; j++) {
        const m = j - this.half + 1; // offset of the input sample from floor(t)
        const t = m - frac; // distance from the output instant, in input samples
        const x = cutoff * t;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const r = t / this.half;
        const window = Math.abs(r) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / norm;
        const h = cutoff * sinc * window;
        this.kernel[p * taps + j] = h;
        sum += h;
      }
      // Unity gain at DC for every phase: no ripple at the phase rate.
      for (let j = 0; j < taps; j++) this.kernel[p * taps + j] /= sum;
    }
    // The delay line starts with half-1 zeros so the first output sits at the first input sample.
    this.buffer = new Float32Array(0);
    this.history = new Float32Array(this.half - 1);
    this.position = 0; // index (in `history`+new input) of floor(t) for the next output
    this.phase = 0; // exact: numerator over `up`; inexact: fractional part as a float in [0, 1)
    this.flushed = false;
  }

  /** Output samples produced for `n` input samples, over the whole stream (for tests and sizing). */
  static expectedLength(n, inRate, outRate) {
    return Math.ceil((n * outRate) / inRate);
  }

  process(input) {
    const data = new Float32Array(this.history.length + input.length);
    data.set(this.history, 0);
    data.set(input, this.history.length);
    const out = [];
    const taps = this.taps;
    const kernel = this.kernel;
    let pos = this.position;
    let phase = this.phase;
    // Output at floor(t) = pos needs inputs pos-half+1 .. pos+half, i.e. data indices pos .. pos+taps-1
    // (data[0] is input sample pos-half+1 of the first window).
    while (pos + taps <= data.length) {
      const p = this.exact ? phase : Math.min(this.phases - 1, Math.round(phase * this.phases));
      const base = p * taps;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += data[pos + j] * kernel[base + j];
      out.push(acc);
      if (this.exact) {
        phase += this.down;
        pos += Math.floor(phase / this.up);
        phase %= this.up;
      } else {
        phase += this.step;
        const whole = Math.floor(phase);
        pos += whole;
        phase -= whole;
        if (Math.round(phase * this.phases) >= this.phases) {
          pos += 1;
          phase = 0;
        }
      }
    }
    // Keep what the next window still needs.
    const keepFrom = Math.min(pos, data.length);
    this.history = data.slice(keepFrom);
    this.position = pos - keepFrom;
    this.phase = phase;
    return Float32Array.from(out);
  }

  /** Run the tail out: feed `half` zeros so the last real samples reach the output. */
  flush() {
    if (this.flushed) return new Float32Array(0);
    this.flushed = true;
    return this.process(new Float32Array(this.half));
  }
}

/** One-shot conversion of a whole signal (for tests and short clips): length ceil(n * out / in). */
export function resample(samples, inRate, outRate) {
  if (inRate === outRate) return Float32Array.from(samples);
  const r = new StreamingResampler(inRate, outRate);
  const a = r.process(samples);
  const b = r.flush();
  const want = StreamingResampler.expectedLength(samples.length, inRate, outRate);
  const out = new Float32Array(want);
  out.set(a.subarray(0, want), 0);
  if (a.length < want) out.set(b.subarray(0, want - a.length), a.length);
  return out;
}

/**
 * Cuts a stream of samples at `rate` into 20 ms (or `chunkMs`) chunks. Rates where 20 ms is not a whole
 * number of samples (11025 Hz) alternate sizes so the chunks average exactly `chunkMs`.
 */
export class Chunker {
  constructor(rate, chunkMs = 20) {
    this.rate = rate;
    this.chunkMs = chunkMs;
    this.pending = new Float32Array(0);
    this.emitted = 0; // chunks so far
  }

  nextSize() {
    const per = (this.rate * this.chunkMs) / 1000;
    return Math.floor(per * (this.emitted + 1)) - Math.floor(per * this.emitted);
  }

  /** Append samples; return the whole chunks now complete (an array of Float32Array). */
  push(samples) {
    const data = new Float32Array(this.pending.length + samples.length);
    data.set(this.pending, 0);
    data.set(samples, this.pending.length);
    const chunks = [];
    let at = 0;
    for (let size = this.nextSize(); size > 0 && at + size <= data.length; size = this.nextSize()) {
      chunks.push(data.slice(at, at + size));
      at += size;
      this.emitted++;
    }
    this.pending = data.slice(at);
    return chunks;
  }
}

/** RMS level of float samples in dBFS (-Infinity for silence). */
export function levelDbfs(samples) {
  if (samples.length === 0) return -Infinity;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return 10 * Math.log10(sum / samples.length);
}
