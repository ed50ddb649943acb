"""The timeline page's static template: its HTML skeleton, its stylesheet and its script, as text.

Boundary: constants only, no Python logic. `relay.inspect.timeline` writes them around the session's data; the
script reads that data from the page's inline JSON elements (`session-data`, `wav-data`, `type-data`,
`records-data`, and `recording-data` when there is a recording) and draws everything in the browser: the
zoomable lanes, the turn bands and latency brackets, the waveform lanes, the detail box.
"""

TIMELINE_HTML = """<section class="timeline-section"><h2>Timeline</h2>
<div class="controls">
<button type="button" id="zoom-in">zoom in</button> <button type="button" id="zoom-out">zoom out</button>
<button type="button" id="zoom-fit">fit</button>
<label><input type="checkbox" id="hide-audio"> hide audio chunks</label>
<span class="legend"><i class="lg-client"></i>client → upstream <i class="lg-server"></i>upstream → client
<i class="lg-relay"></i>relay <i class="lg-error"></i>error <i class="lg-speech"></i>user speech</span>
<span id="hover-info" class="dim">hover a mark to name it, click it to see its record (← → step)</span>
</div>
<div id="timeline">
<div class="row axis"><div class="lane-label">t</div><div class="track" id="axis-track"></div></div>
<div class="row turns-row"><div class="lane-label">turns</div><div class="track" id="turns-track"></div></div>
<div class="row lane" data-lane="client"><div class="lane-label">client</div>
<div class="track" data-track="client"></div></div>
<div class="row lane" data-lane="server"><div class="lane-label">server</div>
<div class="track" data-track="server"></div></div>
<div class="row lane" data-lane="relay"><div class="lane-label">relay</div>
<div class="track" data-track="relay"></div></div>
</div>
<div id="detail-box"><div id="detail-title" class="dim">no record selected</div><pre id="detail"></pre></div>
</section>
"""

TIMELINE_START = '<div id="timeline">'
LANES_END = '</div>\n<div id="detail-box">'
RECORDING_PLAYER = """<div class="recording-player"><b>Recording</b>
<audio id="recording" controls preload="metadata" src="{src}"></audio>
<a class="wav" href="{src}">recording.wav</a>
<span class="dim">click a waveform lane to play from that moment</span></div>
"""
RECORDING_LANES = """<div class="row lane wave-row" data-lane="user-audio"><div class="lane-label">user ♪</div>
<div class="track" data-wave-track="left"><canvas data-wave="left"></canvas><div class="playhead"></div></div></div>
<div class="row lane wave-row" data-lane="assistant-audio"><div class="lane-label">assistant ♪</div>
<div class="track" data-wave-track="right"><canvas data-wave="right"></canvas><div class="playhead"></div></div></div>
"""

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.05em;margin:1.2em 0 .4em}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.5em 0}
.facts dt{color:#667;font-weight:600}.facts dd{margin:0}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde;padding:.2em .6em;text-align:left;
vertical-align:top}.text,.said,.tools td{overflow-wrap:anywhere}.text,.tools td{max-width:40em}
th{background:#eef1f6}.latency td:not(:first-child){text-align:right}
.said{color:#556;font-size:.9em;max-width:40em}.warn{color:#b35c00;font-weight:600}.dim{color:#778}
.controls{margin:.4em 0;display:flex;gap:.6em;align-items:center;flex-wrap:wrap}
#timeline{overflow-x:auto;border:1px solid #ccd;background:#fff;position:relative}
.row{display:flex;align-items:stretch;border-bottom:1px solid #eef;width:max-content;min-width:100%}
.lane-label{position:sticky;left:0;z-index:3;width:4.5em;flex:none;background:#f3f5f9;padding:.3em;
font-weight:600;border-right:1px solid #ccd}
.track{position:relative;flex:none;height:34px}.axis .track{height:20px}.turns-row .track{height:40px}
.tick{position:absolute;top:0;height:100%;border-left:1px solid #dde;font-size:11px;padding-left:2px;
color:#778}
.mark{position:absolute;top:6px;width:6px;height:22px;margin-left:-3px;padding:0;border:0;border-radius:2px;
cursor:pointer;opacity:.85}
.mark:hover,.mark:focus{outline:2px solid #000;opacity:1;z-index:2}
.mark.selected{outline:3px solid #e0007a;z-index:2;opacity:1}
.mark.dir-client{background:#2f6fdf}.mark.dir-server{background:#1e9e5a}.mark.dir-relay{background:#e08a00}
.mark.audio{height:10px;top:18px;opacity:.45}.mark.error{background:#d62828;height:30px;top:2px}
.turn{position:absolute;top:2px;height:16px;background:#dfe8fb;border:1px solid #8aa6e6;border-radius:3px;
font-size:11px;overflow:hidden;white-space:nowrap;padding:0 3px;cursor:pointer;box-sizing:border-box}
.turn.barge{background:#fde7cc;border-color:#e0a050}
.latency-mark{position:absolute;top:21px;height:14px;border:1px solid #d62828;border-top:0;font-size:10px;
color:#d62828;white-space:nowrap;box-sizing:border-box;text-align:center;overflow:visible}
.legend i{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;border-radius:2px}
.lg-client{background:#2f6fdf}.lg-server{background:#1e9e5a}.lg-relay{background:#e08a00}
.lg-error{background:#d62828}.lg-speech{background:#9fd0a8}
.speech{position:absolute;top:2px;height:16px;background:#9fd0a8;border-radius:3px;opacity:.8}
.saved td{vertical-align:middle}
.wave-row .track{height:44px;cursor:pointer}.wave-row canvas{position:absolute;top:0;height:44px}
.playhead{position:absolute;top:0;height:100%;width:0;border-left:2px solid #e0007a;display:none;z-index:2}
.recording-player{display:flex;gap:.8em;align-items:center;margin:.4em 0}
#detail-box{margin-top:.6em}#detail{background:#fff;border:1px solid #ccd;padding:.6em;max-height:28em;
overflow:auto;white-space:pre-wrap;word-break:break-all}
"""

JS = r"""
(function () {
  "use strict";
  const data = (id) => JSON.parse(document.getElementById(id).textContent);
  const session = data("session-data");
  // A Map, not the parsed object: an item id such as "constructor" must not find Object.prototype's members.
  const wavs = new Map(Object.entries(data("wav-data")));
  const records = data("records-data");
  const types = data("type-data");
  const AUDIO = new Set(types.audio);
  const ERRORS = new Set(types.errors);
  // Audio chunks closer than this many pixels to the previous drawn chunk of their lane share its mark
  // (zoom in to separate them): a long session has one chunk every 20 ms, far more than a screen can show.
  const AUDIO_MERGE_PX = 3;
  const tracks = {};
  for (const el of document.querySelectorAll("[data-track]")) tracks[el.dataset.track] = el;
  const allTracks = document.querySelectorAll("#timeline .track");
  const timeline = document.getElementById("timeline");
  const detail = document.getElementById("detail");
  const detailTitle = document.getElementById("detail-title");
  const hoverInfo = document.getElementById("hover-info");
  const hideAudio = document.getElementById("hide-audio");
  let tEnd = 1;
  for (const r of records) if (typeof r.t_ms === "number" && r.t_ms > tEnd) tEnd = r.t_ms;
  const recordingData = document.getElementById("recording-data");
  const recording = recordingData ? JSON.parse(recordingData.textContent) : null;
  const player = document.getElementById("recording");
  if (recording && recording.duration_ms > tEnd) tEnd = recording.duration_ms;
  const fmt = (ms) => (ms / 1000).toFixed(3) + " s";
  const laneOf = (r) => (tracks[r.dir] ? r.dir : "relay");

  const turnsTrack = document.getElementById("turns-track");
  const bands = [];
  for (const t of session.turns) {
    // The band is the assistant's side of the turn; the user's speech before it is its own segment.
    const start = [t.speech_stopped_ms, t.request_ms, t.response_created_ms, t.speech_started_ms]
      .find((x) => typeof x === "number");
    const end = [t.response_done_ms, t.first_audio_ms, t.response_created_ms]
      .find((x) => typeof x === "number");
    if (start === undefined) continue;
    let speech = null;
    if (typeof t.speech_started_ms === "number" && typeof t.speech_stopped_ms === "number") {
      speech = document.createElement("div");
      speech.className = "speech";
      speech.title = "turn " + t.index + ": user speech (VAD start → stop)";
      turnsTrack.appendChild(speech);
    }
    const band = document.createElement("div");
    band.className = "turn" + (t.barge_in ? " barge" : "");
    band.dataset.turn = String(t.index);
    band.textContent = "T" + t.index + (t.status ? " " + t.status : "") + (t.barge_in ? " (barge-in)" : "");
    band.title = band.textContent;
    turnsTrack.appendChild(band);
    let lat = null;
    if (typeof t.speech_to_first_audio_ms === "number") {
      lat = document.createElement("div");
      lat.className = "latency-mark";
      lat.dataset.turn = String(t.index);
      lat.textContent = t.speech_to_first_audio_ms.toFixed(0) + " ms";
      lat.title = "turn " + t.index + ": speech end → first audio " + t.speech_to_first_audio_ms + " ms";
      turnsTrack.appendChild(lat);
    }
    bands.push({ t, band, start, end: end === undefined ? start : Math.max(end, start), lat, speech });
  }

  let scale = 1;
  let selected = -1;
  let drawn = new Map();  // record index -> its mark, for what is on screen now

  function makeMark(r, i, x) {
    const m = document.createElement("button");
    m.type = "button";
    m.className = "mark dir-" + r.dir + (AUDIO.has(r.type) ? " audio" : "") +
      (ERRORS.has(r.type) ? " error" : "") + (i === selected ? " selected" : "");
    m.dataset.i = String(i);
    m.dataset.seq = String(r.seq);
    m.dataset.type = String(r.type);
    m.title = r.type + " @ " + fmt(r.t_ms) + " (seq " + r.seq + ")";
    m.setAttribute("aria-label", m.title);
    m.style.left = x + "px";
    return m;
  }

  // Draw the marks of the visible stretch (plus a screen either side): every non-audio record, and audio
  // chunks thinned to one per AUDIO_MERGE_PX. Scrolling and zooming redraw; nothing else is kept in the DOM.
  function drawMarks() {
    const width = timeline.clientWidth;
    const x0 = timeline.scrollLeft - width;
    const x1 = timeline.scrollLeft + 2 * width;
    const fragments = {};
    const lastAudio = {};
    for (const lane of Object.keys(tracks)) {
      fragments[lane] = document.createDocumentFragment();
      lastAudio[lane] = null;
    }
    drawn = new Map();
    const hide = hideAudio.checked;
    const axis = document.getElementById("axis-track");
    axis.textContent = "";
    const steps = [1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000, 600000];
    // Past the list (a stretch of days, or a corrupted t_ms far out), whole hours times a power of ten: still
    // about one tick per 70 px, so this loop stays a screenful long however far the timeline reaches.
    const step = steps.find((s) => s * scale >= 70) ||
      3600000 * Math.pow(10, Math.max(0, Math.ceil(Math.log10(70 / scale / 3600000))));
    for (let t = Math.max(0, Math.floor(x0 / scale / step) * step); t <= tEnd && t * scale <= x1; t += step) {
      const tick = document.createElement("div");
      tick.className = "tick";
      tick.style.left = (t * scale) + "px";
      tick.textContent = step < 1000 ? t + " ms" : (t / 1000) + " s";
      axis.appendChild(tick);
    }
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const x = r.t_ms * scale;
      if (x < x0 || x > x1) continue;
      const lane = laneOf(r);
      if (AUDIO.has(r.type)) {
        if (hide) continue;
        const last = lastAudio[lane];
        if (last && x - last.x < AUDIO_MERGE_PX && i !== selected) {
          last.more += 1;
          continue;
        }
        noteMerged(last);
        const m = makeMark(r, i, x);
        lastAudio[lane] = { x, m, more: 0 };
        fragments[lane].appendChild(m);
        drawn.set(i, m);
        continue;
      }
      const m = makeMark(r, i, x);
      fragments[lane].appendChild(m);
      drawn.set(i, m);
    }
    for (const lane of Object.keys(tracks)) {
      tracks[lane].textContent = "";
      tracks[lane].appendChild(fragments[lane]);
    }
    for (const lane of Object.keys(tracks)) noteMerged(lastAudio[lane]);
    drawWaves(x0, x1);
  }

  // The recording's lanes: one canvas per channel covering the drawn stretch, each pixel the loudest bucket
  // under it. Peaks are percent of full scale, one per `bucket_ms`.
  function drawWaves(x0, x1) {
    if (!recording) return;
    for (const canvas of document.querySelectorAll("canvas[data-wave]")) {
      const peaks = recording[canvas.dataset.wave];
      const left = Math.max(0, x0);
      const width = Math.max(1, Math.min(Math.ceil(tEnd * scale) + 40, x1) - left);
      canvas.style.left = left + "px";
      canvas.width = width;
      canvas.height = 44;
      canvas.style.width = width + "px";
      const g = canvas.getContext("2d");
      g.clearRect(0, 0, width, 44);
      g.fillStyle = canvas.dataset.wave === "left" ? "#2f6fdf" : "#1e9e5a";
      for (let px = 0; px < width; px++) {
        const b0 = Math.floor((left + px) / scale / recording.bucket_ms);
        const b1 = Math.max(b0 + 1, Math.floor((left + px + 1) / scale / recording.bucket_ms));
        if (b0 >= peaks.length) break;
        let v = 0;
        for (let b = b0; b < b1 && b < peaks.length; b++) if (peaks[b] > v) v = peaks[b];
        const h = Math.max(v ? 1 : 0, (v / 100) * 40);
        g.fillRect(px, 22 - h / 2, 1, h);
      }
    }
    movePlayhead();
  }

  function movePlayhead() {
    if (!player) return;
    for (const head of document.querySelectorAll(".playhead")) {
      head.style.display = player.currentTime > 0 || !player.paused ? "block" : "none";
      head.style.left = (player.currentTime * 1000 * scale) + "px";
    }
  }

  function seek(ms) {
    if (!player) return;
    player.currentTime = Math.max(0, ms) / 1000;
    movePlayhead();
    const playing = player.play();
    if (playing && playing.catch) playing.catch(() => {});  // autoplay policy: the seek still stands
  }

  function noteMerged(last) {
    if (last && last.more) {
      last.m.title += " + " + last.more + " more audio chunk(s) here (zoom in)";
      last.m.setAttribute("aria-label", last.m.title);
    }
  }

  function layout() {
    const width = Math.ceil(tEnd * scale) + 40;
    for (const tr of allTracks) tr.style.width = width + "px";
    for (const b of bands) {
      b.band.style.left = (b.start * scale) + "px";
      b.band.style.width = Math.max(4, (b.end - b.start) * scale) + "px";
      if (b.speech) {
        b.speech.style.left = (b.t.speech_started_ms * scale) + "px";
        b.speech.style.width = Math.max(2, (b.t.speech_stopped_ms - b.t.speech_started_ms) * scale) + "px";
      }
      if (b.lat) {
        b.lat.style.left = (b.t.speech_stopped_ms * scale) + "px";
        b.lat.style.width = Math.max(2, b.t.speech_to_first_audio_ms * scale) + "px";
      }
    }
    drawMarks();
  }

  const fitScale = () => Math.max(200, timeline.clientWidth - 90) / tEnd;
  // Browsers cap an element's width (Chromium near 33 million px): stay well below it.
  const maxScale = () => Math.max(fitScale(), 8000000 / tEnd);

  function fit() {
    scale = fitScale();
    layout();
  }

  function zoom(factor) {
    // Keep the time at the middle of the view where it is.
    const middle = (timeline.scrollLeft + timeline.clientWidth / 2) / scale;
    scale = Math.min(maxScale(), Math.max(fitScale(), scale * factor));
    layout();
    timeline.scrollLeft = middle * scale - timeline.clientWidth / 2;
  }

  function show(i) {
    if (i < 0 || i >= records.length) return;
    const previous = drawn.get(selected);
    if (previous) previous.classList.remove("selected");
    selected = i;
    const r = records[i];
    let m = drawn.get(i);
    const x = r.t_ms * scale;
    if (!m) {
      // Stepping onto a record that shares a mark or lies off screen: bring it into view and draw it.
      if (x < timeline.scrollLeft || x > timeline.scrollLeft + timeline.clientWidth - 90) {
        timeline.scrollLeft = Math.max(0, x - timeline.clientWidth / 2);
      }
      drawMarks();
      m = drawn.get(i);
    }
    if (m) {
      m.classList.add("selected");
      m.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    detailTitle.textContent = r.dir + " · " + r.type + " · seq " + r.seq + " · " + fmt(r.t_ms);
    detail.textContent = JSON.stringify(r, null, 2);
    const item = r.event && (r.event.item_id || (r.event.item && r.event.item.id));
    if (typeof item === "string" && wavs.has(item)) {
      const a = document.createElement("a");
      a.href = wavs.get(item);
      a.textContent = "\n\n▶ saved audio of " + item;
      detail.appendChild(a);
    }
  }

  function showTurn(index) {
    const t = session.turns.find((x) => x.index === index);
    if (!t) return;
    detailTitle.textContent = "turn " + index;
    detail.textContent = JSON.stringify(t, null, 2);
  }

  timeline.addEventListener("click", (e) => {
    const wave = e.target.closest("[data-wave-track]");
    if (wave) { seek((e.clientX - wave.getBoundingClientRect().left) / scale); return; }
    const m = e.target.closest(".mark");
    if (m) { show(Number(m.dataset.i)); return; }
    const b = e.target.closest("[data-turn]");
    if (b) showTurn(Number(b.dataset.turn));
  });
  timeline.addEventListener("mouseover", (e) => {
    const m = e.target.closest(".mark");
    if (m) hoverInfo.textContent = m.title;
  });
  let pending = false;
  timeline.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawMarks(); });
  });
  document.addEventListener("keydown", (e) => {
    if (selected < 0) return;
    if (e.key === "ArrowRight") { show(selected + 1); e.preventDefault(); }
    if (e.key === "ArrowLeft") { show(selected - 1); e.preventDefault(); }
  });
  document.getElementById("zoom-in").addEventListener("click", () => zoom(2));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.5));
  document.getElementById("zoom-fit").addEventListener("click", fit);
  hideAudio.addEventListener("change", drawMarks);
  if (player) {
    player.addEventListener("timeupdate", movePlayhead);
    player.addEventListener("seeked", movePlayhead);
  }
  fit();
})();
"""
