// patterd browser phone: the dashboard's "Call" button. Places a call through the dashboard-access
// carrier and speaks its media protocol (a Media Streams JSON dialect) over the websocket it names:
//   POST <data-voice> → {call_id, media_path}; open the websocket (same origin, the login
//   cookie authenticates it); send `start`, then 20 ms μ-law `media` frames from the worklet;
//   play the agent's `media`, drop it on `clear`, echo each `mark` once the audio before it played,
//   show `transcript` lines; the keypad sends `dtmf`; hang up sends `stop` and closes.
//   Receiver report: media frames carry `chunk` (1, 2, …) and their send times are kept (a ring); when
//   the daemon announces a turn ({turn: {id, chunk}}: the chunk it counted as the caller's last voiced
//   frame), the next agent `media` is that turn's first, and the page replies `heard` {turn, ms}: the
//   time from sending that chunk to receiving that frame, i.e. the turn's latency as the caller heard it.
// State and counters are on window.patterdPhone (tests read framesPlayed, framesSent, transcript, heard).
"use strict";

(() => {
  const root = document.getElementById("phone");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("phone-state"), call: $("phone-call"), hangup: $("phone-hangup"), mute: $("phone-mute"),
    mic: $("meter-mic"), agent: $("meter-agent"), chat: $("phone-chat"), empty: $("phone-chat-empty"),
    info: $("phone-info"), alert: $("phone-alert"), keys: root.querySelectorAll(".keypad button"),
  };

  // What the user can do about a microphone that cannot be opened, by the browser's error name.
  function micHelp(err) {
    const name = err && err.name;
    if (!window.isSecureContext) {
      return "The browser only allows the microphone on secure pages: open this dashboard at https:// " +
        "(e.g. through the tunnel) or at http://localhost / http://127.0.0.1 on this machine.";
    }
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return "Microphone access is blocked for this site. Allow it in the browser (the microphone or lock icon " +
        "in the address bar → Site settings → Microphone → Allow), and check the system's privacy settings " +
        "let the browser use the microphone; then press Call again.";
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return "No microphone was found. Connect one (or pick it as the input device in the system settings), then press Call again.";
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return "The microphone is busy or could not be started (another application may be using it). Close that application, then press Call again.";
    }
    return null;
  }
  class MicError extends Error {}

  function b64encode(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  }
  function b64decode(text) {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const SENT_KEPT = 2048; // send times of the last 2048 media frames (41 s): a turn is announced ~1 s after its end

  class Phone {
    constructor() {
      this.state = "idle"; // idle → connecting → connected → ended (→ idle on the next call) | error
      this.callId = null;
      this.framesSent = 0;
      this.framesPlayed = 0;
      this.framesReceived = 0;
      this.bytesReceived = 0;
      this.marksEchoed = 0;
      this.underruns = 0;
      this.transcript = [];
      this.error = null;
      this.ws = null;
      this.ctx = null;
      this.node = null;
      this.stream = null;
      this.muted = false;
      this.sentAt = new Float64Array(SENT_KEPT); // performance.now() each chunk was sent, by chunk % SENT_KEPT
      this.turn = null; // the announced turn whose first agent frame is still to come
      this.heard = []; // reports sent: {turn, ms}
    }

    setState(state, info) {
      this.state = state;
      ui.state.textContent = state;
      ui.state.dataset.state = state;
      const busy = state === "connecting" || state === "connected";
      ui.call.disabled = busy;
      ui.hangup.disabled = !busy;
      ui.mute.disabled = state !== "connected";
      for (const k of ui.keys) k.disabled = state !== "connected";
      if (info) ui.info.textContent = info;
      root.dispatchEvent(new CustomEvent("phonestate", { detail: { state } }));
    }

    // The agent's words so far, shown as they start playing; the final line replaces them.
    showInterim(role, text) {
      if (!this.interim) {
        const li = document.createElement("li");
        li.className = (role === "assistant" ? "assistant" : "user") + " interim";
        const label = document.createElement("span");
        label.className = "sr-only";
        label.textContent = (role === "assistant" ? "Agent" : "You") + " (speaking): ";
        const bubble = document.createElement("span");
        bubble.className = "bubble";
        li.append(label, bubble);
        this.interim = { li, bubble, role };
        ui.chat.append(li);
        ui.empty.hidden = true;
      }
      this.interim.bubble.textContent = text;
      this.partials = (this.partials || 0) + 1;
      ui.chat.parentElement.scrollTop = ui.chat.parentElement.scrollHeight;
    }

    addLine(role, text) {
      if (this.interim && this.interim.role === role) { this.interim.li.remove(); this.interim = null; }
      this.transcript.push({ role, text });
      const who = role === "assistant" ? "Agent" : "You";
      const li = document.createElement("li");
      li.className = role === "assistant" ? "assistant" : "user";
      const label = document.createElement("span");
      label.className = "sr-only";
      label.textContent = who + ": ";
      const bubble = document.createElement("span");
      bubble.className = "bubble";
      bubble.textContent = text;
      li.append(label, bubble);
      ui.chat.append(li);
      ui.empty.hidden = true;
      ui.chat.parentElement.scrollTop = ui.chat.parentElement.scrollHeight;
    }

    async call() {
      if (this.state === "connecting" || this.state === "connected") return;
      this.framesSent = this.framesPlayed = this.framesReceived = this.bytesReceived = this.marksEchoed = this.underruns = 0;
      this.turn = null;
      this.heard = [];
      this.transcript = [];
      this.error = null;
      this.interim = null;
      this.partials = 0;
      this.callId = null;
      ui.chat.replaceChildren();
      ui.empty.hidden = false;
      this.showAlert(null);
      this.setState("connecting", "Starting audio…");
      try {
        await this.startAudio();
        this.setState("connecting", "Calling the agent…");
        const to = root.dataset.to;
        const resp = await fetch(root.dataset.voice, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-Patterd-CSRF": "1" },
          body: JSON.stringify(to ? { to } : {}),
        });
        const body = await resp.json().catch(() => ({}));
        if (resp.status !== 201) throw new Error((body.error && body.error.message) || `the daemon answered ${resp.status}`);
        this.callId = body.call_id;
        this.openSocket(body.media_path, body.agent);
      } catch (err) {
        this.fail(err);
      }
    }

    async startAudio() {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.AudioWorkletNode) {
        throw new MicError(micHelp(null) || "This browser cannot capture audio here (it needs AudioWorklet support).");
      }
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
        });
      } catch (err) {
        const help = micHelp(err);
        throw help ? new MicError(help) : err;
      }
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      await this.ctx.audioWorklet.addModule("/static/browser-phone-worklet.js");
      const source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, "patterd-phone", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit",
      });
      this.node.port.onmessage = (e) => this.fromWorklet(e.data);
      source.connect(this.node);
      this.node.connect(this.ctx.destination);
      if (this.ctx.state !== "running") await this.ctx.resume();
    }

    openSocket(path, agent) {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify({
          event: "start",
          streamSid: "browser-" + Math.random().toString(36).slice(2, 10),
          start: { mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 } },
        }));
        this.node.port.postMessage({ type: "capture", on: true });
        this.setState("connected", `Connected to ${agent || "the agent"} (call ${this.callId}).`);
      };
      ws.onmessage = (e) => this.fromDaemon(e.data);
      ws.onerror = () => { if (this.state === "connecting") this.fail(new Error("the media websocket was refused")); };
      ws.onclose = () => {
        if (this.ws === ws) this.end(this.state === "connecting" ? "The daemon refused the media stream." : "Call ended.");
      };
    }

    fromDaemon(text) {
      const now = performance.now(); // before parsing: the frame arrived now
      let msg;
      try { msg = JSON.parse(text); } catch (_) { return; }
      if (msg.event === "media" && msg.media && msg.media.payload) {
        if (this.turn) this.report(this.turn, now);
        this.turn = null;
        const payload = b64decode(msg.media.payload);
        this.bytesReceived += payload.length;
        this.framesReceived = Math.floor(this.bytesReceived / 160); // in 20 ms units, like framesPlayed
        this.node.port.postMessage({ type: "media", payload }, [payload.buffer]);
      } else if (msg.event === "mark" && msg.mark) {
        this.node.port.postMessage({ type: "mark", name: msg.mark.name });
      } else if (msg.event === "clear") {
        this.node.port.postMessage({ type: "clear" });
      } else if (msg.event === "transcript") {
        if (msg.partial) this.showInterim(msg.role, msg.text);
        else this.addLine(msg.role, msg.text);
      } else if (msg.event === "turn" && msg.turn) {
        this.turn = msg.turn;
      }
    }

    // What the caller heard of a turn: its last voiced chunk sent → the turn's first agent frame received.
    report(turn, received) {
      const chunk = turn.chunk;
      if (!Number.isInteger(chunk) || chunk < 1 || chunk > this.framesSent || this.framesSent - chunk >= SENT_KEPT) return;
      const ms = Math.round((received - this.sentAt[chunk % SENT_KEPT]) * 10) / 10;
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send(JSON.stringify({ event: "heard", heard: { turn: turn.id, ms } }));
      this.heard.push({ turn: turn.id, ms });
    }

    fromWorklet(msg) {
      if (msg.type === "frame") {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          const chunk = this.framesSent + 1;
          const text = JSON.stringify({ event: "media", media: { chunk, payload: b64encode(msg.payload) } });
          this.sentAt[chunk % SENT_KEPT] = performance.now();
          this.ws.send(text);
          this.framesSent = chunk;
        }
      } else if (msg.type === "mark") {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) {
          this.ws.send(JSON.stringify({ event: "mark", mark: { name: msg.name } }));
          this.marksEchoed++;
        }
      } else if (msg.type === "stats") {
        this.framesPlayed = msg.framesPlayed;
        this.underruns = msg.underruns;
        this.bufferedMs = msg.bufferedMs;
        ui.mic.value = Math.min(1, Math.sqrt(msg.micLevel));
        ui.agent.value = Math.min(1, Math.sqrt(msg.agentLevel));
      }
    }

    dtmf(digit) {
      if (this.state !== "connected" || !this.ws) return;
      this.ws.send(JSON.stringify({ event: "dtmf", dtmf: { digit } }));
    }

    setMuted(on) {
      this.muted = on;
      ui.mute.setAttribute("aria-pressed", String(on));
      ui.mute.textContent = on ? "Unmute" : "Mute";
      if (this.node) this.node.port.postMessage({ type: "mute", on });
    }

    hangup() {
      if (this.state !== "connecting" && this.state !== "connected") return;
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ event: "stop", stop: { callSid: this.callId } }));
      }
      this.end("You hung up.");
    }

    end(info) {
      const ws = this.ws;
      this.ws = null;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "hangup");
      this.stopAudio();
      if (this.state !== "error") this.setState("ended", info);
      this.setMuted(false);
    }

    showAlert(message) {
      if (!ui.alert) return;
      ui.alert.textContent = message || "";
      ui.alert.hidden = !message;
    }

    fail(err) {
      this.error = String(err && err.message ? err.message : err);
      if (err instanceof MicError) {
        this.showAlert(this.error);
        this.setState("error", "The microphone could not be opened.");
      } else {
        this.setState("error", "Call failed: " + this.error);
      }
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close();
      this.stopAudio();
    }

    stopAudio() {
      // Keep the counters (tests and the page read them after the call); release the devices.
      if (this.node) { this.node.port.postMessage({ type: "capture", on: false }); this.node.disconnect(); }
      if (this.stream) for (const t of this.stream.getTracks()) t.stop();
      if (this.ctx) this.ctx.close().catch(() => {});
      this.node = this.stream = this.ctx = null;
      ui.mic.value = 0;
      ui.agent.value = 0;
    }
  }

  const phone = new Phone();
  window.patterdPhone = phone;
  ui.call.addEventListener("click", () => phone.call());
  ui.hangup.addEventListener("click", () => phone.hangup());
  ui.mute.addEventListener("click", () => phone.setMuted(!phone.muted));
  for (const k of ui.keys) k.addEventListener("click", () => phone.dtmf(k.dataset.digit));
  root.addEventListener("keydown", (e) => {
    if (phone.state === "connected" && /^[0-9*#]$/.test(e.key) && !(e.target instanceof HTMLInputElement)) phone.dtmf(e.key);
  });
  window.addEventListener("pagehide", () => phone.hangup());
  phone.setState("idle");
})();
