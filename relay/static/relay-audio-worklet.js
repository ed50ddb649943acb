// AudioWorklet processors of realtime-relay's browser client, loaded with audioWorklet.addModule().
//
// Boundary: runs on the browser's audio rendering thread, at the AudioContext's rate. No network, no
// resampling, no protocol knowledge: samples and small messages in and out through `port`.
//
// - "relay-capture": copies the microphone's first channel (or the mean of its channels) into blocks of
//   `blockFrames` and posts each block (Float32Array, transferred) to the main thread, which resamples it to
//   the session's input rate. Posting ~20 ms blocks instead of every 128-frame quantum keeps the message rate low.
// - "relay-playback": the jitter buffer. The main thread pushes float chunks (already at the context rate)
//   tagged with the assistant item they belong to. Playback starts once `prebufferFrames` are queued (or the
//   item's audio is marked complete), and restarts the same way after an underrun, so network jitter costs a
//   short pause rather than crackle. Every frame played is counted per item: the count is what barge-in
//   reports in `conversation.item.truncate` (audio_end_ms = milliseconds of that item actually heard).
//   "clear" drops everything queued at once (the barge-in) and answers with the counts at that instant.

class RelayCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frames = options?.processorOptions?.blockFrames;
    this.blockFrames = Number.isInteger(frames) && frames > 0 ? frames : 960;
    this.block = new Float32Array(this.blockFrames);
    this.filled = 0;
    this.active = true;
    this.port.onmessage = (e) => {
      if (e.data?.type === "stop") this.active = false;
    };
  }

  process(inputs) {
    if (!this.active) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true; // no source connected yet
    const channels = input.length;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let s = input[0][i];
      if (channels > 1) {
        for (let c = 1; c < channels; c++) s += input[c][i];
        s /= channels;
      }
      this.block[this.filled++] = s;
      if (this.filled === this.blockFrames) {
        const full = this.block;
        this.port.postMessage({ type: "block", samples: full }, [full.buffer]);
        this.block = new Float32Array(this.blockFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

class RelayPlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const pre = options?.processorOptions?.prebufferFrames;
    this.prebufferFrames = Number.isInteger(pre) && pre >= 0 ? pre : Math.round(sampleRate * 0.08);
    this.queue = []; // {samples: Float32Array, offset, item}
    this.queued = 0; // frames not yet played
    this.playing = false;
    this.complete = new Set(); // items whose audio has fully arrived: play their tail without prebuffering
    this.playedTotal = 0;
    this.playedByItem = new Map();
    this.currentItem = null;
    this.underruns = 0;
    this.levelSum = 0;
    this.levelFrames = 0;
    this.lastLevel = -Infinity;
    this.sinceReport = 0;
    this.reportFrames = Math.round(sampleRate * 0.05);
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "push" && msg.samples instanceof Float32Array && msg.samples.length > 0) {
      this.queue.push({ samples: msg.samples, offset: 0, item: msg.item ?? null });
      this.queued += msg.samples.length;
    } else if (msg.type === "complete") {
      this.complete.add(msg.item ?? null);
    } else if (msg.type === "clear") {
      const item = this.currentItem ?? this.queue[0]?.item ?? null;
      const dropped = this.queued;
      this.queue = [];
      this.queued = 0;
      this.playing = false;
      this.port.postMessage({
        type: "cleared",
        id: msg.id,
        item,
        droppedFrames: dropped,
        playedFrames: item === null ? 0 : this.playedByItem.get(item) ?? 0,
        ...this.stats(),
      });
    } else if (msg.type === "forget") {
      this.playedByItem.delete(msg.item);
      this.complete.delete(msg.item);
    }
  }

  stats() {
    return {
      playedTotal: this.playedTotal,
      queuedFrames: this.queued,
      underruns: this.underruns,
      level: this.lastLevel,
      playing: this.playing,
      currentItem: this.currentItem,
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    const head = this.queue[0];
    if (!this.playing && this.queued > 0) {
      if (this.queued >= this.prebufferFrames || (head && this.complete.has(head.item))) this.playing = true;
    }
    let written = 0;
    if (this.playing) {
      while (written < n && this.queue.length > 0) {
        const chunk = this.queue[0];
        const take = Math.min(n - written, chunk.samples.length - chunk.offset);
        const item = chunk.item;
        for (let i = 0; i < take; i++) {
          const s = chunk.samples[chunk.offset + i];
          out[0][written + i] = s;
          this.levelSum += s * s;
        }
        chunk.offset += take;
        written += take;
        this.queued -= take;
        this.playedTotal += take;
        this.currentItem = item;
        if (item !== null) this.playedByItem.set(item, (this.playedByItem.get(item) ?? 0) + take);
        if (chunk.offset >= chunk.samples.length) this.queue.shift();
      }
      if (written < n) {
        // Ran dry mid-quantum: an underrun unless this item's audio is simply over.
        if (!(this.currentItem !== null && this.complete.has(this.currentItem))) this.underruns++;
        this.playing = false;
      }
    }
    for (let i = written; i < n; i++) out[0][i] = 0;
    for (let c = 1; c < out.length; c++) out[c].set(out[0]);
    this.levelFrames += n;
    this.sinceReport += n;
    if (this.sinceReport >= this.reportFrames) {
      this.lastLevel = this.levelSum > 0 ? 10 * Math.log10(this.levelSum / this.levelFrames) : -Infinity;
      this.levelSum = 0;
      this.levelFrames = 0;
      this.sinceReport = 0;
      this.port.postMessage({ type: "stats", ...this.stats() });
    }
    return true;
  }
}

registerProcessor("relay-capture", RelayCaptureProcessor);
registerProcessor("relay-playback", RelayPlaybackProcessor);
