// The call page's recording player: <audio> (range-served WAV), both channels' waveform, the transcript
// line being heard highlighted, a click on a line seeking to it, barge-ins and tool calls marked.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const dataEl = $("call-data");
  const card = $("player-card");
  if (!dataEl || !card) return;
  const record = JSON.parse(dataEl.textContent);
  if (!record.has_recording) return;

  const callId = record.metadata.call_id;
  const url = `/api/v1/calls/${encodeURIComponent(callId)}/recording`;
  const audio = $("player");
  const canvas = $("waveform");
  const marks = $("player-marks");
  card.hidden = false;
  audio.src = url;

  // The recording starts when the media connected: the call's `in_progress` status (else its start).
  const secsOf = (ts) => { const t = Date.parse(ts); return isNaN(t) ? null : t / 1000; };
  const connected = (record.events || []).find((e) => e.type === "status" && e.data && e.data.status === "in_progress");
  const origin = secsOf((connected && connected.ts) || record.metadata.started_at) || 0;
  const at = (ts) => { const s = secsOf(ts); return s === null ? null : Math.max(0, s - origin); };

  // Where each transcript line sits in the recording (its `ts`), in transcript order.
  const linePos = (record.transcript || []).map((line) => at(line.ts));

  // ---------------------------------------------------------------- highlight and seek

  function lineItems() {
    return Array.from(document.querySelectorAll("#chat > li:not(.interim)"));
  }

  let current = -1;
  function highlight() {
    const t = audio.currentTime;
    let active = -1;
    linePos.forEach((p, i) => { if (p !== null && p <= t + 0.05) active = i; });
    const items = lineItems();
    items.forEach((li, i) => {
      const on = i === active;
      li.classList.toggle("playing", on);
      if (on) li.setAttribute("aria-current", "true"); else li.removeAttribute("aria-current");
    });
    if (active !== current && active >= 0 && items[active] && !audio.paused) {
      items[active].scrollIntoView({ block: "nearest" });
    }
    current = active;
    drawPlayhead();
  }

  function seek(secs) {
    audio.currentTime = Math.max(0, secs);
    highlight();
  }

  $("chat").addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (!li || li.classList.contains("interim")) return;
    const i = lineItems().indexOf(li);
    if (i >= 0 && linePos[i] !== null) {
      seek(linePos[i]);
      audio.play().catch(() => { /* autoplay refused: the position is still set */ });
    }
  });
  // dashboard.js redraws the transcript on live updates: keep the highlight and make lines look clickable
  new MutationObserver(() => { current = -1; highlight(); }).observe($("chat"), { childList: true });
  $("chat").classList.add("seekable");

  audio.addEventListener("timeupdate", highlight);
  audio.addEventListener("seeked", highlight);
  let raf = 0;
  const tick = () => { highlight(); raf = audio.paused ? 0 : requestAnimationFrame(tick); };
  audio.addEventListener("play", () => { if (!raf) raf = requestAnimationFrame(tick); });

  // ---------------------------------------------------------------- waveform

  let peaks = null; // {left: Float32Array, right: Float32Array, secs}

  function ulawToLinear(u) {
    u = ~u & 0xff;
    const sign = u & 0x80, exponent = (u >> 4) & 0x07, mantissa = u & 0x0f;
    const sample = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    return (sign ? -sample : sample) / 32124;
  }
  const ULAW = new Float32Array(256).map((_, i) => Math.abs(ulawToLinear(i)));

  function dataChunk(view) {
    // RIFF chunks after "WAVE": find "data" (the writer's header claims only what is on disk)
    let off = 12;
    while (off + 8 <= view.byteLength) {
      const id = String.fromCharCode(view.getUint8(off), view.getUint8(off + 1), view.getUint8(off + 2), view.getUint8(off + 3));
      const size = view.getUint32(off + 4, true);
      if (id === "data") return [off + 8, Math.min(size, view.byteLength - off - 8)];
      off += 8 + size + (size & 1);
    }
    return [0, 0];
  }

  function computePeaks(buffer, columns) {
    const view = new DataView(buffer);
    const [start, size] = dataChunk(view);
    const frames = Math.floor(size / 2);
    const left = new Float32Array(columns), right = new Float32Array(columns);
    const bytes = new Uint8Array(buffer, start, frames * 2);
    const per = Math.max(1, frames / columns);
    for (let f = 0; f < frames; f++) {
      const c = Math.min(columns - 1, Math.floor(f / per));
      const l = ULAW[bytes[2 * f]], r = ULAW[bytes[2 * f + 1]];
      if (l > left[c]) left[c] = l;
      if (r > right[c]) right[c] = r;
    }
    return { left, right, secs: frames / 8000 };
  }

  function draw() {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, mid = h / 2;
    ctx.clearRect(0, 0, w, h);
    if (!peaks) return;
    const style = getComputedStyle(canvas);
    ctx.fillStyle = style.getPropertyValue("--caller").trim() || "#3b82f6";
    peaks.left.forEach((p, x) => { const y = p * (mid - 2); ctx.fillRect(x, mid - 1 - y, 1, Math.max(1, y)); });
    ctx.fillStyle = style.getPropertyValue("--agent").trim() || "#10b981";
    peaks.right.forEach((p, x) => { const y = p * (mid - 2); ctx.fillRect(x, mid + 1, 1, Math.max(1, y)); });
  }

  function drawPlayhead() {
    const head = $("playhead");
    const total = (peaks && peaks.secs) || audio.duration || 0;
    if (!head || !total || !isFinite(total)) return;
    head.style.left = `${Math.min(100, (audio.currentTime / total) * 100)}%`;
  }

  function placeMarks(total) {
    marks.replaceChildren();
    for (const ev of record.events || []) {
      if (ev.type !== "barge_in" && ev.type !== "tool_call") continue; // only these are marked
      const t = at(ev.ts);
      if (t === null || t > total) continue;
      const d = ev.data || {};
      const label = ev.type === "barge_in" ? "caller interrupted" : `tool ${d.name || "?"}`;
      const b = document.createElement("button");
      b.type = "button";
      b.className = `mark ${ev.type === "barge_in" ? "barge" : "tool"}`;
      b.dataset.type = ev.type;
      b.dataset.at = t.toFixed(3);
      b.style.left = `${(t / total) * 100}%`;
      b.title = `${label} at ${t.toFixed(1)} s`;
      b.setAttribute("aria-label", b.title);
      b.addEventListener("click", () => seek(t));
      marks.append(b);
    }
  }

  canvas.addEventListener("click", (e) => {
    const total = (peaks && peaks.secs) || audio.duration;
    if (!total || !isFinite(total)) return;
    const box = canvas.getBoundingClientRect();
    seek(((e.clientX - box.left) / box.width) * total);
  });

  async function loadWaveform() {
    canvas.width = Math.max(200, Math.floor(canvas.clientWidth || 800));
    try {
      const resp = await fetch(url, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      peaks = computePeaks(await resp.arrayBuffer(), canvas.width);
      draw();
      placeMarks(peaks.secs);
      card.dataset.waveform = "ready";
      drawPlayhead();
    } catch (err) {
      card.dataset.waveform = "failed";
      $("player-note").textContent = `Waveform unavailable: ${err.message}`;
    }
  }
  loadWaveform();
})();
