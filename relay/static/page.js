// The page served at "/" by `realtime-relay serve`: talk to the model through the relay from a browser.
//
// Boundary: DOM only. Everything about the session (socket, audio, barge-in, saved WAV fetches) is in
// relay-client.js; this file renders its events: status, errors, transcripts, saved items, the event console.
// `window.relayPage` exposes the current client for debugging and the browser tests.

import { FAILURES, RelayClient, probeAuth, relayRelativeUrl, summarizeEvent } from "./relay-client.js";

const $ = (id) => document.getElementById(id);
const els = {
  status: $("status"),
  sessionInfo: $("session-info"),
  tokenRow: $("token-row"),
  token: $("token"),
  connect: $("connect"),
  mic: $("mic"),
  micLevel: $("mic-level"),
  micDb: $("mic-db"),
  vad: $("vad"),
  vadHint: $("vad-hint"),
  outLevel: $("out-level"),
  played: $("played"),
  error: $("error"),
  transcript: $("transcript"),
  say: $("say"),
  sayText: $("say-text"),
  saySend: $("say-send"),
  saved: $("saved"),
  player: $("player"),
  filter: $("filter"),
  showClient: $("show-client"),
  showServer: $("show-server"),
  showAudio: $("show-audio"),
  clearConsole: $("clear-console"),
  eventCount: $("event-count"),
  consoleBody: document.querySelector("#console tbody"),
};

const MAX_ROWS = 1500;
// With the microphone on and no speech detected for this long, the page says what to check.
const NO_SPEECH_HINT_MS = 10_000;
const VAD_LABELS = { off: "mic off", listening: "listening", speech: "speech", waiting: "waiting for reply" };
const AUDIO_TYPES = new Set(["input_audio_buffer.append", "response.output_audio.delta"]);

const page = { vad: { state: "off", since: 0, heardSpeech: false, history: ["off"] }, client: null, audioContext: null, meterPeaks: { mic: -70, speaker: -70 }, authRequired: null, eventCount: 0, blobUrls: [], audioRuns: { client: null, server: null } };
window.relayPage = page;

function setStatus(state, text) {
  els.status.dataset.state = state;
  els.status.textContent = text;
}

function showError(kind, message) {
  els.error.hidden = false;
  els.error.dataset.kind = kind;
  els.error.textContent = message;
}

function clearError() {
  els.error.hidden = true;
  els.error.dataset.kind = "";
  els.error.textContent = "";
}

async function checkAuth() {
  const result = await probeAuth(location.href, "");
  if (result === "ok") {
    page.authRequired = false;
    els.tokenRow.hidden = true;
  } else if (result === "auth_failed") {
    page.authRequired = true;
    els.tokenRow.hidden = false;
  } else {
    showError("relay_down", FAILURES.relay_down);
  }
  document.body.dataset.auth = page.authRequired === null ? "unknown" : page.authRequired ? "required" : "off";
}

// ---- connection -------------------------------------------------------------------------------------------

async function connect() {
  clearError();
  const token = els.token.value.trim();
  if (page.authRequired && !token) {
    showError("auth_failed", "this relay needs a client token: paste one minted by POST /v1/realtime/client_secrets");
    return;
  }
  // One AudioContext for the page's lifetime: browsers cap how many a page may open, and reconnects are common.
  page.audioContext ??= new AudioContext({ latencyHint: "interactive" });
  const client = new RelayClient({ token, audioContext: page.audioContext });
  page.client = client;
  wire(client);
  // "connected" means the model session is live: the relay opens the socket first and the upstream session after
  // it, so a refused session (the relay's session limit, an upstream that is down) never shows as connected.
  client.addEventListener("session.created", () => {
    if (page.client === client && els.status.dataset.state === "connecting") setStatus("open", "connected");
  }, { once: true });
  setStatus("connecting", "connecting…");
  els.connect.disabled = true;
  try {
    await client.connect();
  } catch (err) {
    setStatus("failed", "not connected");
    els.connect.disabled = false;
    showError(err.kind ?? "closed", err.message ?? String(err));
    return;
  }
  if (page.client !== client || els.status.dataset.state === "failed" || els.status.dataset.state === "idle") return;
  if (els.status.dataset.state === "connecting") setStatus("connecting", "starting the session…");
  els.connect.textContent = "Disconnect";
  els.connect.disabled = false;
  els.mic.disabled = false;
  setTyping(true);
}

// A typed message is a user item and a response request, as any realtime client sends them; the transcript shows it
// when the server has added the item (relay-client.js), like everything else the conversation holds.
function setTyping(enabled) {
  els.sayText.disabled = !enabled;
  els.saySend.disabled = !enabled;
}

function say(text) {
  const client = page.client;
  if (!client || client.state !== "open" || !text.trim()) return;
  client.send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  client.send({ type: "response.create" });
}

function disconnect() {
  page.client?.close();
}

// ---- voice activity ---------------------------------------------------------------------------------------
// The server's VAD decides when a turn starts and ends; showing its state (and a hint when it never hears
// speech) keeps a quiet or wrong microphone from looking like a dead page.

function setVad(state) {
  if (page.vad.state === state) return;
  page.vad.state = state;
  page.vad.since = performance.now();
  page.vad.history.push(state);
  els.vad.dataset.state = state;
  els.vad.textContent = VAD_LABELS[state];
  if (state !== "listening") els.vadHint.hidden = true;
}

function followVad(event) {
  if (!page.client?.micActive) return;
  if (event.type === "input_audio_buffer.speech_started") {
    page.vad.heardSpeech = true;
    setVad("speech");
  } else if (event.type === "input_audio_buffer.speech_stopped") {
    setVad("waiting");
  } else if (event.type === "response.done" && page.vad.state !== "speech") {
    setVad("listening");
  }
}

function updateVadHint() {
  const silent = page.vad.state === "listening" && performance.now() - page.vad.since >= NO_SPEECH_HINT_MS;
  if (silent && els.vadHint.hidden) els.vadHint.hidden = false;
  document.body.dataset.vadHint = String(!els.vadHint.hidden);
}

function wire(client) {
  client.addEventListener("server", (e) => {
    logEvent("server", e.detail);
    followVad(e.detail.event);
  });
  client.addEventListener("client", (e) => logEvent("client", e.detail));
  client.addEventListener("transcript", (e) => renderTranscript(e.detail));
  client.addEventListener("saved", (e) => renderSaved(e.detail));
  client.addEventListener("relay.tool_call", (e) => renderToolCall(e.detail));
  client.addEventListener("session", (e) => renderSession(e.detail));
  client.addEventListener("failure", (e) => showError(e.detail.kind, e.detail.message));
  client.addEventListener("bargein", (e) => {
    const li = els.transcript.querySelector(`li[data-item-id="${CSS.escape(e.detail.itemId)}"]`);
    if (li) li.dataset.truncatedMs = String(e.detail.audioEndMs);
  });
  client.addEventListener("error", (e) => {
    const err = e.detail?.error ?? {};
    if (!Object.hasOwn(FAILURES, String(err.code))) showError("server_error", `server error ${err.code ?? err.type ?? ""}: ${err.message ?? ""}`);
  });
  client.addEventListener("mic", (e) => {
    els.mic.textContent = e.detail.active ? "Stop microphone" : "Start microphone";
    els.mic.dataset.active = String(e.detail.active);
    setVad(e.detail.active ? "listening" : "off");
  });
  client.addEventListener("close", (e) => {
    if (page.client !== client) return;
    const { kind, code, reason } = e.detail;
    setStatus(kind === "normal" ? "idle" : "failed", kind === "normal" ? "disconnected" : `closed (${code}${reason ? " " + reason : ""})`);
    els.connect.textContent = "Connect";
    els.connect.disabled = false;
    els.mic.disabled = true;
    setTyping(false);
    setVad("off");
  });
}

function renderSession({ input, output, session }) {
  const fmt = (c) => (c ? `${c.type.replace("audio/", "")} ${c.rate} Hz` : "unsupported format");
  const parts = [`in: ${fmt(input)}`, `out: ${fmt(output)}`];
  if (session.audio?.output?.voice) parts.push(`voice: ${session.audio.output.voice}`);
  els.sessionInfo.textContent = parts.join(" · ");
}

async function toggleMic() {
  const client = page.client;
  if (!client) return;
  clearError();
  try {
    if (client.micActive) client.stopMicrophone();
    else await client.startMicrophone();
  } catch (err) {
    showError("microphone", `microphone: ${err.message ?? err}`);
  }
}

// ---- transcripts ------------------------------------------------------------------------------------------

function renderTranscript({ role, itemId, text, done }) {
  let li = els.transcript.querySelector(`li[data-item-id="${CSS.escape(itemId)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.className = `turn ${role}`;
    li.dataset.itemId = itemId;
    li.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "you" : "assistant";
    const body = document.createElement("span");
    body.className = "text";
    li.append(who, body);
    els.transcript.append(li);
  }
  li.querySelector(".text").textContent = text;
  li.dataset.done = String(done);
  li.scrollIntoView({ block: "nearest" });
}

// ---- server-side tools -------------------------------------------------------------------------------------

// A tool the relay ran for the model (relay.tool_call): name, result and time; arguments and output only when
// the operator lets clients see them (tool_details_to_client). Text nodes only: the values are not markup.
function renderToolCall(call) {
  const li = document.createElement("li");
  li.className = "turn tool";
  li.dataset.callId = String(call.call_id ?? "");
  li.dataset.result = String(call.result ?? "");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = "tool";
  const body = document.createElement("span");
  body.className = "text";
  const ms = typeof call.duration_ms === "number" ? `${Math.round(call.duration_ms)} ms` : "";
  body.textContent = [String(call.name ?? "?"), String(call.result ?? "?"), ms].filter(Boolean).join(" · ");
  li.append(who, body);
  if ("arguments" in call || "output" in call) {
    const details = document.createElement("code");
    details.className = "tool-details";
    const args = typeof call.arguments === "string" ? call.arguments : JSON.stringify(call.arguments ?? {});
    details.textContent = `${args} → ${String(call.output ?? "")}`;
    li.append(details);
  }
  els.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
}

// ---- saved audio ------------------------------------------------------------------------------------------

function renderSaved(saved) {
  const li = document.createElement("li");
  li.dataset.itemId = saved.item_id;
  li.dataset.url = saved.url;
  li.dataset.state = "saved";
  const label = document.createElement("span");
  const role = page.client?.transcripts.get(saved.item_id)?.role;
  label.textContent = `${role ? role + " " : ""}${saved.item_id} · ${(saved.duration_ms / 1000).toFixed(2)} s · ${saved.source ?? ""}`;
  const play = document.createElement("button");
  play.type = "button";
  play.textContent = "Play";
  play.className = "play";
  const info = document.createElement("span");
  info.className = "muted decoded";
  play.addEventListener("click", () => playSaved(li, saved.url, info));
  li.append(play, label, info);
  els.saved.append(li);
}

async function playSaved(li, url, info) {
  const client = page.client;
  li.dataset.state = "loading";
  try {
    // Same-origin relative URLs only (relayRelativeUrl), whichever path fetches it.
    const blob = await (client
      ? client.fetchSavedAudio(url)
      : fetch(relayRelativeUrl(url, location.href)).then((r) => r.blob()));
    page.audioContext ??= new AudioContext();
    const ctx = page.audioContext;
    const buffer = await ctx.decodeAudioData(await blob.arrayBuffer());
    li.dataset.decodedMs = String(Math.round(buffer.duration * 1000));
    info.textContent = `decoded ${buffer.duration.toFixed(2)} s @ ${buffer.sampleRate} Hz`;
    const objectUrl = URL.createObjectURL(blob);
    page.blobUrls.push(objectUrl);
    els.player.hidden = false;
    els.player.src = objectUrl;
    li.dataset.state = "decoded";
    await els.player.play().catch(() => {}); // autoplay may be refused; the controls are there
  } catch (err) {
    li.dataset.state = "error";
    info.textContent = String(err.message ?? err);
    showError("saved_audio", `could not load saved audio: ${err.message ?? err}`);
  }
}

// ---- event console ----------------------------------------------------------------------------------------

function timeOf(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function summaryText(event, dir) {
  const client = page.client;
  const rate = dir === "client" ? client?.inputCodec?.rate : client?.outputCodec?.rate;
  const copy = summarizeEvent(event, rate);
  delete copy.type;
  delete copy.event_id;
  const text = JSON.stringify(copy);
  return text.length > 180 ? text.slice(0, 177) + "…" : text;
}

function rowVisible(row) {
  const needle = els.filter.value.trim().toLowerCase();
  if (needle && !row.dataset.type.toLowerCase().includes(needle)) return false;
  if (row.dataset.dir === "client" && !els.showClient.checked) return false;
  if (row.dataset.dir === "server" && !els.showServer.checked) return false;
  if (row.dataset.audio === "true" && !els.showAudio.checked) return false;
  return true;
}

function applyFilter() {
  for (const row of els.consoleBody.rows) {
    if (row.classList.contains("details")) row.hidden = true;
    else row.hidden = !rowVisible(row);
  }
  // A narrowing filter collapses the list and resets the scroll; follow the newest events again.
  const scroller = els.consoleBody.closest(".console-scroll");
  scroller.scrollTop = scroller.scrollHeight;
}

function logEvent(dir, { event, bytes, time }) {
  page.eventCount++;
  els.eventCount.textContent = `${page.eventCount} events`;
  const type = event.type;
  if (AUDIO_TYPES.has(type)) {
    // Audio chunks arrive 50 per second each way: a run of them collapses into one row per direction with a
    // running total. Any other event ends the runs, so the console still reads in order.
    const rate = dir === "client" ? page.client?.inputCodec?.rate : page.client?.outputCodec?.rate;
    const audio = summarizeEvent(event, rate)[type === "input_audio_buffer.append" ? "audio" : "delta"];
    const open = page.audioRuns[dir];
    if (open && open.isConnected && open.dataset.type === type) {
      const n = Number(open.dataset.count) + 1;
      const ms = Number(open.dataset.audioMs) + (audio.audio_ms ?? 0);
      const b = Number(open.dataset.audioBytes) + audio.audio_bytes;
      open.dataset.count = String(n);
      open.dataset.audioMs = String(ms);
      open.dataset.audioBytes = String(b);
      open.cells[3].textContent = `${n} chunks · ${Math.round(ms)} ms · ${b} bytes of audio`;
      return;
    }
    const row = addRow(dir, type, time, `1 chunk · ${Math.round(audio.audio_ms ?? 0)} ms · ${audio.audio_bytes} bytes of audio`, null);
    row.dataset.audio = "true";
    row.dataset.count = "1";
    row.dataset.audioMs = String(audio.audio_ms ?? 0);
    row.dataset.audioBytes = String(audio.audio_bytes);
    row.hidden = !rowVisible(row);
    page.audioRuns[dir] = row;
    return;
  }
  page.audioRuns = { client: null, server: null };
  const row = addRow(dir, type, time, summaryText(event, dir), event);
  row.hidden = !rowVisible(row);
}

function addRow(dir, type, time, summary, event) {
  const row = els.consoleBody.insertRow();
  row.className = `event ${dir}`;
  row.dataset.dir = dir;
  row.dataset.type = type;
  row.dataset.audio = "false";
  if (type === "error") row.classList.add("is-error");
  for (const text of [timeOf(time), dir === "client" ? "↑ client" : "↓ server", type, summary]) {
    row.insertCell().textContent = text;
  }
  if (event) {
    row.classList.add("expandable");
    row.addEventListener("click", () => toggleDetails(row, event));
  }
  while (els.consoleBody.rows.length > MAX_ROWS) els.consoleBody.deleteRow(0);
  const scroller = els.consoleBody.closest(".console-scroll");
  if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80) scroller.scrollTop = scroller.scrollHeight;
  return row;
}

function toggleDetails(row, event) {
  const next = row.nextElementSibling;
  if (next && next.classList.contains("details")) {
    next.remove();
    return;
  }
  const details = document.createElement("tr");
  details.className = "details";
  const cell = details.insertCell();
  cell.colSpan = 4;
  const pre = document.createElement("pre");
  const rate = row.dataset.dir === "client" ? page.client?.inputCodec?.rate : page.client?.outputCodec?.rate;
  pre.textContent = JSON.stringify(summarizeEvent(event, rate), null, 2);
  cell.append(pre);
  row.after(details);
}

// ---- meters -----------------------------------------------------------------------------------------------

function updateMeters() {
  const c = page.client;
  const clamp = (db) => (Number.isFinite(db) ? Math.max(-70, Math.min(0, db)) : -70);
  els.micLevel.value = clamp(c?.inputLevel ?? -Infinity);
  els.micDb.textContent = c?.micActive ? `${Math.round(els.micLevel.value)} dBFS` : "- dBFS";
  els.outLevel.value = clamp(c?.outputLevel ?? -Infinity);
  // The loudest reading each meter has shown (for the tests: the meters really move).
  page.meterPeaks.mic = Math.max(page.meterPeaks.mic, els.micLevel.value);
  page.meterPeaks.speaker = Math.max(page.meterPeaks.speaker, els.outLevel.value);
  const ms = c ? Math.round(c.playedMs) : 0;
  els.played.textContent = `${ms} ms played`;
  els.played.dataset.samples = String(c?.playedSamples ?? 0);
  updateVadHint();
}

// ---- start ------------------------------------------------------------------------------------------------

els.connect.addEventListener("click", () => (page.client?.state === "open" ? disconnect() : connect()));
els.mic.addEventListener("click", toggleMic);
els.say.addEventListener("submit", (e) => {
  e.preventDefault();
  say(els.sayText.value);
  els.sayText.value = "";
});
els.tokenRow.addEventListener("submit", (e) => {
  e.preventDefault(); // Enter in the token field connects; the form never navigates
  if (page.client?.state !== "open") connect();
});
for (const el of [els.filter, els.showClient, els.showServer, els.showAudio]) el.addEventListener("input", applyFilter);
els.clearConsole.addEventListener("click", () => {
  els.consoleBody.replaceChildren();
  page.eventCount = 0;
  els.eventCount.textContent = "";
});
setInterval(updateMeters, 100);
checkAuth().then(() => {
  document.body.dataset.ready = "true";
});
