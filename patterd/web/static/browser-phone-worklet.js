// patterd browser phone audio: one AudioWorkletProcessor for both directions of a call.
//   microphone (context rate) → windowed-sinc low-pass + resample → 8 kHz → G.711 μ-law → 20 ms frames (160 bytes)
//   agent μ-law 8 kHz → linear → windowed-sinc resample → context rate → jitter buffer → speaker
// The jitter buffer waits for PREBUFFER_MS of audio (or a mark: the end of what is coming) before
// it plays, re-buffers after an underrun, drops everything on `clear`, and reports each mark once
// the audio queued before it has played (or was dropped by clear), as carriers' media streams do.
"use strict";

const NET_RATE = 8000;
const FRAME = 160; // 20 ms at 8 kHz
const CUTOFF_HZ = 3600; // below 8 kHz's Nyquist (4 kHz) with room for the filter's transition band
const PREBUFFER_MS = 80;
const STATS_EVERY_MS = 100;

// ---------------------------------------------------------------- G.711 μ-law
const BIAS = 0x84;
const CLIP = 32635;
const EXP_LUT = new Uint8Array(256);
for (let i = 1; i < 256; i++) EXP_LUT[i] = Math.floor(Math.log2(i));
const ULAW_TO_FLOAT = new Float32Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  const sign = u & 0x80, exponent = (u >> 4) & 0x07, mantissa = u & 0x0f;
  const magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
  ULAW_TO_FLOAT[i] = (sign ? -magnitude : magnitude) / 32768;
}

function floatToUlaw(x) {
  let s = Math.round(Math.max(-1, Math.min(1, x)) * 32767);
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  const exponent = EXP_LUT[(s >> 7) & 0xff];
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

// ---------------------------------------------------------------- band-limited resampler
// Streaming windowed-sinc interpolation (Blackman window, ZEROS zero crossings each side): the
// kernel is low-pass at `cutoffHz`, so downsampling does not alias and upsampling does not image.
// The kernel is tabulated at RES points per input sample and linearly interpolated.
const ZEROS = 8;
const RES = 64;

class Resampler {
  constructor(inRate, outRate, cutoffHz) {
    this.step = inRate / outRate;
    const c = Math.min(cutoffHz, 0.5 * Math.min(inRate, outRate)) / inRate; // cycles per input sample
    this.half = ZEROS / (2 * c); // kernel half-width in input samples
    const n = Math.ceil(this.half * RES) + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = i / RES;
      if (d >= this.half) break;
      const x = 2 * c * d;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const r = d / this.half;
      const w = 0.42 + 0.5 * Math.cos(Math.PI * r) + 0.08 * Math.cos(2 * Math.PI * r);
      this.table[i] = 2 * c * sinc * w;
    }
    this.buf = new Float32Array(8192);
    this.len = 0;
    this.base = 0; // absolute input index of buf[0]
    this.t = 0; // absolute input position of the next output sample
  }

  // Feed input samples; calls emit(sample) for every output sample that is now computable.
  push(input, emit) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const { table, half } = this;
    const last = this.base + this.len - 1;
    while (Math.floor(this.t + half) <= last) {
      const lo = Math.max(Math.ceil(this.t - half), this.base);
      const hi = Math.floor(this.t + half);
      let acc = 0;
      for (let k = lo; k <= hi; k++) {
        const d = Math.abs(this.t - k) * RES;
        const i = d | 0;
        acc += this.buf[k - this.base] * (table[i] + (table[i + 1] - table[i]) * (d - i));
      }
      emit(acc);
      this.t += this.step;
    }
    const drop = Math.floor(this.t - half) - this.base;
    if (drop > 0) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.base += drop;
    }
  }
}

// ---------------------------------------------------------------- the processor

class PatterdPhoneProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.capturing = false;
    this.muted = false;
    this.down = new Resampler(sampleRate, NET_RATE, CUTOFF_HZ);
    this.up = new Resampler(NET_RATE, sampleRate, CUTOFF_HZ);
    this.frame = new Uint8Array(FRAME);
    this.frameLen = 0;
    this.framesSent = 0;
    this.micPeak = 0;
    // Playback queue: Float32Array chunks at the context rate.
    this.chunks = [];
    this.head = 0; // read offset in chunks[0]
    this.queued = 0;
    this.enqueuedPos = 0; // samples ever queued (absolute positions for marks)
    this.playedPos = 0; // samples ever taken out of the queue (played or dropped)
    this.playedAudio = 0; // samples of agent audio actually played
    this.marks = []; // {name, at}
    this.playing = false;
    this.prebuffer = Math.round((PREBUFFER_MS / 1000) * sampleRate);
    this.underruns = 0;
    this.agentPeak = 0;
    this.pending = []; // resampler output staging
    this.lastStats = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "media") {
      const ulaw = msg.payload; // Uint8Array, 8 kHz μ-law
      const linear = new Float32Array(ulaw.length);
      for (let i = 0; i < ulaw.length; i++) linear[i] = ULAW_TO_FLOAT[ulaw[i]];
      const out = this.pending;
      out.length = 0;
      this.up.push(linear, (s) => out.push(s));
      if (out.length) {
        this.chunks.push(Float32Array.from(out));
        this.queued += out.length;
        this.enqueuedPos += out.length;
      }
    } else if (msg.type === "mark") {
      this.marks.push({ name: msg.name, at: this.enqueuedPos });
    } else if (msg.type === "clear") {
      this.playedPos += this.queued;
      this.chunks = [];
      this.head = 0;
      this.queued = 0;
      this.playing = false;
      this.flushMarks(true);
    } else if (msg.type === "capture") {
      this.capturing = !!msg.on;
    } else if (msg.type === "mute") {
      this.muted = !!msg.on;
    }
  }

  flushMarks(all) {
    while (this.marks.length && (all || this.marks[0].at <= this.playedPos)) {
      this.port.postMessage({ type: "mark", name: this.marks.shift().name });
    }
  }

  capture(input) {
    if (!this.capturing) return;
    let peak = 0;
    for (let i = 0; i < input.length; i++) peak = Math.max(peak, Math.abs(input[i]));
    this.micPeak = Math.max(this.micPeak, this.muted ? 0 : peak);
    this.down.push(input, (s) => {
      this.frame[this.frameLen++] = this.muted ? 0xff : floatToUlaw(s);
      if (this.frameLen === FRAME) {
        this.port.postMessage({ type: "frame", payload: this.frame });
        this.frame = new Uint8Array(FRAME);
        this.frameLen = 0;
        this.framesSent++;
      }
    });
  }

  play(output) {
    output.fill(0);
    if (!this.playing && this.queued > 0 && (this.queued >= this.prebuffer || this.marks.length > 0)) this.playing = true;
    if (this.playing) {
      let written = 0;
      while (written < output.length && this.chunks.length) {
        const chunk = this.chunks[0];
        const n = Math.min(output.length - written, chunk.length - this.head);
        output.set(chunk.subarray(this.head, this.head + n), written);
        written += n;
        this.head += n;
        if (this.head === chunk.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
      this.queued -= written;
      this.playedPos += written;
      this.playedAudio += written;
      for (let i = 0; i < written; i++) this.agentPeak = Math.max(this.agentPeak, Math.abs(output[i]));
      if (this.queued === 0) {
        this.playing = false; // empty: wait for PREBUFFER_MS again (or a mark) before playing on
        if (written < output.length && this.marks.length === 0) this.underruns++;
      }
    }
    this.flushMarks(false);
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) this.capture(input);
    const out = outputs[0];
    if (out && out[0]) {
      this.play(out[0]);
      for (let ch = 1; ch < out.length; ch++) out[ch].set(out[0]);
    }
    if (currentTime * 1000 - this.lastStats >= STATS_EVERY_MS) {
      this.lastStats = currentTime * 1000;
      this.port.postMessage({
        type: "stats",
        micLevel: this.micPeak,
        agentLevel: this.agentPeak,
        framesSent: this.framesSent,
        framesPlayed: Math.floor((this.playedAudio * NET_RATE) / sampleRate / FRAME),
        bufferedMs: (this.queued / sampleRate) * 1000,
        underruns: this.underruns,
      });
      this.micPeak = 0;
      this.agentPeak = 0;
    }
    return true;
  }
}

registerProcessor("patterd-phone", PatterdPhoneProcessor);
