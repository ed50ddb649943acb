// realtime-relay browser client: one realtime session through the relay, with microphone and speaker helpers.
//
// Boundary: a WebSocket to the relay's /v1/realtime, two fetches to the relay (/relay/auth to tell "auth
// failed" from "relay down", and saved WAVs), and Web Audio (getUserMedia, one AudioContext, the worklets in
// relay-audio-worklet.js). No DOM: the page (page.js) or any web frontend listens to its events.
//
// Usage (any page on the relay's origin, or one that serves these three files itself):
//   import { RelayClient } from "/static/relay-client.js";
//   const client = new RelayClient({ token });              // token minted server-side (client_secrets)
//   client.addEventListener("transcript", (e) => console.log(e.detail.role, e.detail.text));
//   await client.connect();
//   await client.startMicrophone();
//
// Audio rates are never assumed: the input and output formats come from session.created / session.updated
// (`session.audio.input.format`, `session.audio.output.format`) and the converters are rebuilt when they change.

import { Chunker, StreamingResampler, decodeWire, encodeWire, levelDbfs, wireCodec } from "./pcm16.js";

export const SUBPROTOCOL = "realtime";
export const TOKEN_SUBPROTOCOL_PREFIX = "openai-insecure-api-key.";

// Error codes the relay sends (docs/forwarding.md, docs/lifecycle.md) and the failures the client detects itself.
export const FAILURES = Object.freeze({
  auth_failed: "auth failed: the relay refused the token",
  relay_down: "the relay is not reachable",
  upstream_unavailable: "the upstream (model) is unavailable",
  upstream_disconnected: "the upstream (model) closed the session",
  client_too_slow: "this client was too slow to receive; the relay closed the session",
  too_many_sessions: "the relay is at its session limit; try again later",
  session_expired: "the session reached its time limit",
  closed: "the connection closed",
  audio: "audio could not start in this browser",
  refused: "the relay refused the connection (draining or restarting?); try again shortly",
});

const AUDIO_EVENT_FIELDS = { "input_audio_buffer.append": "audio", "response.output_audio.delta": "delta" };

/** A failure with a `kind` from FAILURES (plus `code`/`reason` of the close when there was one). */
export class RelayError extends Error {
  constructor(kind, detail = "", close = null) {
    super(detail ? `${FAILURES[kind] ?? kind}: ${detail}` : FAILURES[kind] ?? kind);
    this.name = "RelayError";
    this.kind = kind;
    this.close = close;
  }
}

/**
 * Ask the relay whether `token` is accepted: "ok" (204), "auth_failed" (401) or "relay_down" (no answer).
 * A browser sees a refused WebSocket upgrade only as close 1006, so this is how a page tells them apart.
 */
/** `url` resolved against the relay's `baseUrl`, only when it is a relative path ("/...", not "//host") that stays
 *  on the relay's origin; anything else (another host, a scheme, a protocol-relative URL) throws. See
 *  docs/security.md: saved-audio URLs arrive in events, and the page sends its token with the fetch. */
export function relayRelativeUrl(url, baseUrl) {
  if (typeof url !== "string" || !url.startsWith("/") || url.startsWith("//") || url.includes("\\")) {
    throw new Error("refusing a saved-audio URL that is not a relative path on the relay");
  }
  const base = new URL(baseUrl);
  const target = new URL(url, base);
  if (target.origin !== base.origin) throw new Error("refusing a saved-audio URL on another origin");
  return target;
}

export async function probeAuth(baseUrl, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const res = await fetch(new URL("/relay/auth", baseUrl), { headers, cache: "no-store" });
    if (res.status === 204 || res.ok) return "ok";
    if (res.status === 401 || res.status === 403) return "auth_failed";
    return "relay_down";
  } catch {
    return "relay_down";
  }
}

/** A copy of an event safe to show or log: audio payloads replaced by {audio_bytes, audio_ms?}. */
export function summarizeEvent(event, rate = null) {
  const field = AUDIO_EVENT_FIELDS[event?.type];
  const copy = { ...event };
  if (field && typeof copy[field] === "string") copy[field] = audioSummary(copy[field], rate);
  if (copy.item && Array.isArray(copy.item.content)) {
    // conversation.item.retrieved carries whole items with audio.
    copy.item = {
      ...copy.item,
      content: copy.item.content.map((part) =>
        part && typeof part.audio === "string" ? { ...part, audio: audioSummary(part.audio, null) } : part,
      ),
    };
  }
  return copy;
}

function audioSummary(b64, rate) {
  const bytes = Math.floor((b64.length * 3) / 4) - (b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0);
  const summary = { audio_bytes: bytes };
  if (rate) summary.audio_ms = Math.round((bytes / 2 / rate) * 1000 * 10) / 10;
  return summary;
}

function wsUrlFor(url, base) {
  const u = new URL(url ?? "/v1/realtime", base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}

/**
 * One realtime session through the relay.
 *
 * Events (EventTarget; `detail` carries the data):
 *   "open", "close" {code, reason, kind, message}, "failure" {kind, message} (auth failed, relay down, relay errors)
 *   "server" {event, bytes, time} for every server event; "client" {event, bytes, time} for every event sent
 *   "<server event type>" with the event itself as detail (e.g. "session.updated", "relay.audio_saved", "error")
 *   "transcript" {role: "user"|"assistant", itemId, text, done}
 *   "saved" {item_id, url, duration_ms, source}, "bargein" {itemId, audioEndMs}, "session" {session}
 *   "mic" {active}
 * Counters for tests and meters: playedSamples / playedMs, inputLevel / outputLevel (dBFS), sentChunks,
 * underruns.
 */
export class RelayClient extends EventTarget {
  constructor({
    url = "/v1/realtime",
    baseUrl = globalThis.location?.href,
    token = "",
    relayEvents = true,
    model = null,
    playback = true,
    prebufferMs = 80,
    chunkMs = 20,
    audioContext = null,
  } = {}) {
    super();
    this.baseUrl = baseUrl;
    this.url = url;
    this.token = token;
    this.relayEvents = relayEvents;
    this.model = model;
    this.playback = playback;
    this.prebufferMs = prebufferMs;
    this.chunkMs = chunkMs;
    this.audioContext = audioContext;
    this.ownsContext = audioContext === null;
    this.ws = null;
    this.state = "idle"; // idle | connecting | open | closed
    this.session = null;
    this.inputCodec = null;
    this.updatesInFlight = new Map(); // event_id of a session.update sent -> the input codec before it
    this.outputCodec = null;
    this.lastError = null; // the last relay/upstream error event's code, for the close that follows it
    this.userClosed = false;
    this.failure = null;
    // audio
    this.mic = null; // {stream, source, node, resampler, chunker, codecKey}
    this.playbackNode = null;
    this.outputResampler = null;
    this.outputResamplerKey = "";
    this.inputLevel = -Infinity;
    this.outputLevel = -Infinity;
    this.playedSamples = 0;
    this.underruns = 0;
    this.sentChunks = 0;
    this.playback_ = { queuedFrames: 0, playing: false, currentItem: null };
    this.audioItems = new Map(); // assistant item id -> {contentIndex, responseId, done}
    this.droppedItems = new Set(); // items cut by barge-in: late deltas are not played
    this.transcripts = new Map(); // item id -> {role, text, source}
    this.clearRequests = new Map();
    this.nextClearId = 1;
  }

  get playedMs() {
    return this.audioContext ? (this.playedSamples / this.audioContext.sampleRate) * 1000 : 0;
  }

  get micActive() {
    return this.mic !== null;
  }

  /** The WebSocket URL used by connect(). */
  socketUrl() {
    const u = wsUrlFor(this.url, this.baseUrl);
    if (this.relayEvents) u.searchParams.set("relay_events", "1");
    if (this.model) u.searchParams.set("model", this.model);
    return u.toString();
  }

  /**
   * Open the session. Resolves once the socket is open; rejects with a RelayError whose `kind` is
   * "auth_failed" or "relay_down" (from /relay/auth after a refused upgrade) or a relay error code.
   * Call it from a user gesture: it also creates/resumes the AudioContext for playback.
   */
  async connect() {
    if (this.state === "connecting" || this.state === "open") throw new Error("already connected");
    this.state = "connecting";
    this.failure = null;
    this.lastError = null;
    this.userClosed = false;
    if (this.playback) {
      try {
        await this.ensureAudio();
      } catch (err) {
        // The worklet module comes from the relay: when it cannot load, the relay is usually down.
        this.state = "closed";
        const probe = await probeAuth(this.baseUrl, this.token);
        throw this.fail(probe === "relay_down" ? "relay_down" : "audio", String(err?.message ?? err));
      }
    }
    const protocols = this.token ? [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + this.token] : [];
    let ws;
    try {
      ws = new WebSocket(this.socketUrl(), protocols);
    } catch (err) {
      // e.g. a token with characters a subprotocol cannot carry
      this.state = "closed";
      throw this.fail("auth_failed", String(err?.message ?? err));
    }
    this.ws = ws;
    let opened = false;
    await new Promise((resolve, reject) => {
      ws.onopen = () => {
        opened = true;
        this.state = "open";
        this.dispatchEvent(new CustomEvent("open"));
        resolve();
      };
      ws.onmessage = (e) => this.onMessage(e.data);
      ws.onclose = async (e) => {
        this.state = "closed";
        this.stopMicrophone();
        this.releaseAudio();
        let kind = this.userClosed ? "normal" : this.closeKind(e.code, e.reason);
        if (!opened && !this.userClosed) {
          // A refused upgrade looks like 1006 to a browser: ask /relay/auth what it was.
          const probe = await probeAuth(this.baseUrl, this.token);
          kind = probe === "ok" ? "refused" : probe;
        }
        const detail = { code: e.code, reason: e.reason, kind, message: FAILURES[kind] ?? "" };
        if (kind !== "normal") this.fail(kind, e.reason || "", detail);
        this.dispatchEvent(new CustomEvent("close", { detail }));
        if (!opened) reject(new RelayError(kind, "", detail));
      };
    });
  }

  /** Close the session (1000). The microphone and playback stop. */
  close(code = 1000, reason = "") {
    this.userClosed = true;
    this.stopMicrophone();
    this.stopPlayback();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
  }

  closeKind(code, reason) {
    const known = [reason, this.lastError].find((r) => typeof r === "string" && Object.hasOwn(FAILURES, r));
    if (known) return known;
    if (code === 1000 || code === 1001 || code === 1005) return "normal";
    if (code === 1013) return "upstream_unavailable";
    if (code === 1014) return "upstream_disconnected";
    if (code === 1008) return "client_too_slow";
    return "closed";
  }

  fail(kind, detail = "", close = null) {
    const error = new RelayError(kind, detail, close);
    this.failure = { kind, message: error.message };
    this.dispatchEvent(new CustomEvent("failure", { detail: this.failure }));
    return error;
  }

  /** Send one client event (an object). Returns false when the socket is not open. */
  send(event) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(event);
    this.ws.send(text);
    if (event?.type === "session.update") this.followOwnUpdate(event);
    this.dispatchEvent(new CustomEvent("client", { detail: { event, bytes: text.length, time: Date.now() } }));
    return true;
  }

  // The server reads the appends that follow a session.update in the input format it asks for (events apply in
  // order), so the microphone switches as the update goes out, not when session.updated comes back; an error
  // naming the update's event_id puts the previous format back.
  followOwnUpdate(event) {
    const asked = event.session?.audio?.input?.format;
    if (!asked || typeof asked !== "object" || !this.session) return;
    const codec = wireCodec({ ...(this.session.audio?.input?.format ?? {}), ...asked });
    if (!codec) return;
    if (typeof event.event_id === "string") this.updatesInFlight.set(event.event_id, this.inputCodec);
    this.inputCodec = codec;
  }

  onMessage(data) {
    if (typeof data !== "string") return; // the protocol is JSON text only
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (!event || typeof event !== "object" || typeof event.type !== "string") return;
    this.handleServerEvent(event);
    this.dispatchEvent(new CustomEvent("server", { detail: { event, bytes: data.length, time: Date.now() } }));
    this.dispatchEvent(new CustomEvent(event.type, { detail: event }));
  }

  handleServerEvent(event) {
    switch (event.type) {
      case "session.updated": {
        const answered = this.updatesInFlight.keys().next(); // the oldest update sent is the one answered
        if (!answered.done) this.updatesInFlight.delete(answered.value);
        this.applySession(event.session);
        break;
      }
      case "session.created":
        this.applySession(event.session);
        break;
      case "error": {
        const refused = event.error?.event_id;
        if (typeof refused === "string" && this.updatesInFlight.has(refused)) {
          this.inputCodec = this.updatesInFlight.get(refused); // that update never took effect
          this.updatesInFlight.delete(refused);
        }
        const code = event.error?.code;
        if (code) this.lastError = code;
        if (typeof code === "string" && Object.hasOwn(FAILURES, code)) this.fail(code, event.error?.message ?? "");
        break;
      }
      case "response.output_audio.delta":
        this.onAudioDelta(event);
        break;
      case "response.output_audio.done":
        this.markAudioComplete(event.item_id);
        break;
      case "response.done":
        for (const item of event.response?.output ?? []) if (item?.id) this.markAudioComplete(item.id);
        break;
      case "input_audio_buffer.speech_started":
        this.bargeIn();
        break;
      case "conversation.item.added": // GA
      case "conversation.item.created": {
        // A typed user message (from this page or any client of the session): its text is its transcript.
        const item = event.item;
        if (item?.role === "user" && Array.isArray(item.content)) {
          const text = item.content.filter((part) => part?.type === "input_text" && typeof part.text === "string").map((part) => part.text).join("\n");
          if (text) this.transcript("user", item.id, text, true, "input_text");
        }
        break;
      }
      case "conversation.item.input_audio_transcription.delta":
        this.transcript("user", event.item_id, event.delta, false, "delta");
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.transcript("user", event.item_id, event.transcript, true, "completed");
        break;
      case "response.output_text.delta": // Yandex: the text being spoken
      case "response.output_audio_transcript.delta": // OpenAI: the transcript of the audio
        this.transcript("assistant", event.item_id, event.delta, false, event.type);
        break;
      case "response.output_text.done":
        this.transcript("assistant", event.item_id, event.text, true, "response.output_text.delta");
        break;
      case "response.output_audio_transcript.done":
        this.transcript("assistant", event.item_id, event.transcript, true, "response.output_audio_transcript.delta");
        break;
      case "relay.audio_saved":
        this.dispatchEvent(new CustomEvent("saved", { detail: event }));
        break;
      default:
        break;
    }
  }

  transcript(role, itemId, text, done, source) {
    if (typeof text !== "string" || !itemId) return;
    let entry = this.transcripts.get(itemId);
    if (!entry) {
      entry = { role, text: "", source, done: false };
      this.transcripts.set(itemId, entry);
    }
    // A server that sends both text and audio-transcript deltas for one item would double the text: the
    // first kind seen for the item wins; a final text (done/completed) replaces whatever the deltas built.
    if (done) {
      if (source !== entry.source && entry.text && !entry.done && role === "assistant") return;
      entry.text = text;
      entry.done = true;
    } else {
      if (entry.done || source !== entry.source) return;
      entry.text += text;
    }
    this.dispatchEvent(new CustomEvent("transcript", { detail: { role, itemId, text: entry.text, done: entry.done } }));
  }

  applySession(session) {
    if (!session || typeof session !== "object") return;
    this.session = session;
    const input = wireCodec(session.audio?.input?.format);
    const output = wireCodec(session.audio?.output?.format);
    this.inputCodec = input;
    this.outputCodec = output;
    this.dispatchEvent(new CustomEvent("session", { detail: { session, input, output } }));
  }

  // ---- audio: context and playback ----------------------------------------------------------------------

  async ensureAudio() {
    if (!this.audioContext) this.audioContext = new AudioContext({ latencyHint: "interactive" });
    if (!this.workletLoaded) {
      this.workletLoaded = this.audioContext.audioWorklet.addModule(new URL("./relay-audio-worklet.js", import.meta.url));
    }
    try {
      await this.workletLoaded;
    } catch (err) {
      this.workletLoaded = null; // try again on the next connect
      throw err;
    }
    if (this.audioContext.state === "suspended") await this.audioContext.resume();
    if (this.playback && !this.playbackNode) {
      const ctx = this.audioContext;
      this.playbackNode = new AudioWorkletNode(ctx, "relay-playback", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { prebufferFrames: Math.round((ctx.sampleRate * this.prebufferMs) / 1000) },
      });
      this.playbackNode.port.onmessage = (e) => this.onPlaybackMessage(e.data);
      this.playbackNode.connect(ctx.destination);
    }
    return this.audioContext;
  }

  onPlaybackMessage(msg) {
    if (msg.type === "stats" || msg.type === "cleared") {
      this.playedSamples = msg.playedTotal;
      this.underruns = msg.underruns;
      this.outputLevel = msg.level;
      this.playback_ = { queuedFrames: msg.queuedFrames, playing: msg.playing, currentItem: msg.currentItem };
    }
    if (msg.type === "cleared") {
      const resolve = this.clearRequests.get(msg.id);
      this.clearRequests.delete(msg.id);
      if (resolve) resolve(msg);
    }
  }

  onAudioDelta(event) {
    if (!this.playbackNode || !this.outputCodec || typeof event.delta !== "string") return;
    const itemId = event.item_id ?? null;
    if (itemId !== null && this.droppedItems.has(itemId)) return;
    if (itemId !== null && !this.audioItems.has(itemId)) {
      this.audioItems.set(itemId, { contentIndex: event.content_index ?? 0, done: false });
    }
    let samples;
    try {
      samples = decodeWire(event.delta, this.outputCodec);
    } catch {
      return; // not base64: nothing to play
    }
    const ctxRate = this.audioContext.sampleRate;
    const key = `${this.outputCodec.rate}->${ctxRate}`;
    if (this.outputResamplerKey !== key) {
      this.outputResampler = this.outputCodec.rate === ctxRate ? null : new StreamingResampler(this.outputCodec.rate, ctxRate);
      this.outputResamplerKey = key;
    }
    const converted = this.outputResampler ? this.outputResampler.process(samples) : samples;
    if (converted.length) this.playbackNode.port.postMessage({ type: "push", samples: converted, item: itemId }, [converted.buffer]);
  }

  markAudioComplete(itemId) {
    const entry = this.audioItems.get(itemId);
    if (!entry || entry.done) return;
    entry.done = true;
    if (this.outputResampler && this.playbackNode) {
      // The filter holds the last few milliseconds: let them out so the item plays to its end.
      const tail = this.outputResampler.flush();
      this.outputResampler = null;
      this.outputResamplerKey = "";
      if (tail.length) this.playbackNode.port.postMessage({ type: "push", samples: tail, item: itemId }, [tail.buffer]);
    }
    this.playbackNode?.port.postMessage({ type: "complete", item: itemId });
  }

  /** Drop everything queued for playback now; resolves with the worklet's counts at that instant. */
  clearPlayback() {
    if (!this.playbackNode) return Promise.resolve(null);
    const id = this.nextClearId++;
    const done = new Promise((resolve) => this.clearRequests.set(id, resolve));
    this.playbackNode.port.postMessage({ type: "clear", id });
    this.outputResampler = null;
    this.outputResamplerKey = "";
    return done;
  }

  /**
   * Barge-in: the user started speaking. If assistant audio is playing (or still arriving), stop it at once
   * and tell the server how much of that item was actually heard.
   */
  async bargeIn() {
    if (!this.playbackNode) return;
    const streaming = [...this.audioItems.entries()].find(([id, v]) => !v.done && !this.droppedItems.has(id));
    const cleared = await this.clearPlayback();
    if (!cleared) return;
    const itemId = cleared.droppedFrames > 0 ? cleared.item : streaming?.[0] ?? null;
    if (!itemId || (cleared.droppedFrames === 0 && !streaming)) return;
    this.droppedItems.add(itemId);
    const played = cleared.item === itemId ? cleared.playedFrames : 0;
    const audioEndMs = Math.floor((played / this.audioContext.sampleRate) * 1000);
    const contentIndex = this.audioItems.get(itemId)?.contentIndex ?? 0;
    this.send({ type: "conversation.item.truncate", item_id: itemId, content_index: contentIndex, audio_end_ms: audioEndMs });
    this.dispatchEvent(new CustomEvent("bargein", { detail: { itemId, audioEndMs } }));
  }

  /** After the session: disconnect the playback node; close the AudioContext if this client made it. */
  releaseAudio() {
    this.stopPlayback();
    if (this.playbackNode) {
      this.playbackNode.port.onmessage = null;
      this.playbackNode.disconnect();
      this.playbackNode = null;
    }
    if (this.ownsContext && this.audioContext) {
      this.audioContext.close().catch(() => {});
      this.audioContext = null;
      this.workletLoaded = null;
    }
  }

  stopPlayback() {
    if (this.playbackNode) {
      this.playbackNode.port.postMessage({ type: "clear", id: 0 });
    }
    this.audioItems.clear();
    this.outputResampler = null;
    this.outputResamplerKey = "";
  }

  // ---- audio: microphone --------------------------------------------------------------------------------

  /**
   * Capture the microphone and stream it as input_audio_buffer.append, `chunkMs` per event, converted to the
   * session's input format. `constraints` are MediaTrackConstraints for the audio track.
   */
  async startMicrophone(constraints = {}) {
    if (this.mic) return;
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("no microphone API here (not a secure context?)");
    const ctx = await this.ensureAudio();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true, ...constraints },
    });
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "relay-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { blockFrames: Math.round((ctx.sampleRate * this.chunkMs) / 1000) },
    });
    // Silent output into the destination keeps the node pulled by the rendering graph.
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node);
    node.connect(mute).connect(ctx.destination);
    this.mic = { stream, source, node, mute, resampler: null, chunker: null, codecKey: "" };
    node.port.onmessage = (e) => {
      if (e.data?.type === "block") this.onMicBlock(e.data.samples);
    };
    this.dispatchEvent(new CustomEvent("mic", { detail: { active: true } }));
  }

  onMicBlock(block) {
    const mic = this.mic;
    if (!mic) return;
    this.inputLevel = levelDbfs(block);
    const codec = this.inputCodec;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.session) return; // no session config yet
    if (!codec) {
      // Say so once instead of streaming audio the server would misread.
      if (mic.codecKey !== "unsupported") this.fail("audio", `unsupported input format ${JSON.stringify(this.session.audio?.input?.format)}`);
      mic.codecKey = "unsupported";
      return;
    }
    const ctxRate = this.audioContext.sampleRate;
    const key = `${codec.type}/${codec.rate}<-${ctxRate}`;
    if (mic.codecKey !== key) {
      // The input format changed (session.updated): start fresh converters at the new rate.
      mic.resampler = codec.rate === ctxRate ? null : new StreamingResampler(ctxRate, codec.rate);
      mic.chunker = new Chunker(codec.rate, this.chunkMs);
      mic.codecKey = key;
    }
    const converted = mic.resampler ? mic.resampler.process(block) : block;
    for (const chunk of mic.chunker.push(converted)) {
      this.send({ type: "input_audio_buffer.append", audio: encodeWire(chunk, codec) });
      this.sentChunks++;
    }
  }

  stopMicrophone() {
    const mic = this.mic;
    if (!mic) return;
    this.mic = null;
    mic.node.port.postMessage({ type: "stop" });
    mic.source.disconnect();
    mic.node.disconnect();
    mic.mute.disconnect();
    for (const track of mic.stream.getTracks()) track.stop();
    this.inputLevel = -Infinity;
    this.dispatchEvent(new CustomEvent("mic", { detail: { active: false } }));
  }

  // ---- saved audio --------------------------------------------------------------------------------------

  /** Fetch a saved item's WAV (the `url` of relay.audio_saved) with this client's token; returns a Blob.
   *  Only a relative path on the relay itself is fetched: the token never goes to a URL an event names. */
  async fetchSavedAudio(url) {
    const target = relayRelativeUrl(url, this.baseUrl);
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    const res = await fetch(target, { headers, cache: "no-store" });
    if (!res.ok) throw new Error(`saved audio ${url}: HTTP ${res.status}`);
    return res.blob();
  }
}
