// patterd dashboard: live calls over SSE, call history with search/filters/paging, the plot, the call page.
// Plain browser JavaScript, no build step. Every POST carries X-Patterd-CSRF (the server refuses
// cookie-authenticated POSTs without it), and data only ever reaches the page via textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const page = document.body.dataset.page;
  const CSRF = { "X-Patterd-CSRF": "1" };
  const LIVE = new Set(["ringing", "in_progress"]);
  const state = { revealAll: false };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  let toastTimer = 0;
  function toast(message, kind) {
    const box = $("toast");
    if (!box) return;
    box.textContent = message;
    box.dataset.kind = kind || "info";
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 8000 : 4000);
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.method && opts.method !== "GET" ? CSRF : {}, opts.headers || {});
    const resp = await fetch(path, opts);
    if (resp.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("signed out");
    }
    let body = null;
    const type = resp.headers.get("content-type") || "";
    if (type.includes("json")) body = await resp.json();
    if (!resp.ok) {
      const err = body && body.error ? body.error : { message: resp.status + " " + resp.statusText };
      const issues = err.issues && err.issues.length ? ": " + err.issues.join("; ") : "";
      throw new Error((err.message || "request failed") + issues);
    }
    return body;
  }

  function debounce(fn, ms) {
    let t = 0;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  }

  function parseTs(ts) { const d = new Date(ts); return isNaN(d) ? null : d; }
  function fmtTime(ts) {
    const d = parseTs(ts);
    if (!d) return "—";
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "—";
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}:${String(r).padStart(2, "0")}`;
  }
  function fmtMs(v) { return v === null || v === undefined ? "—" : `${Math.round(v)} ms`; }
  function fmtCost(v) {
    if (v === null || v === undefined) return "—";
    if (v === 0) return "$0";
    return v < 0.01 ? `$${v.toFixed(4)}` : `$${v.toFixed(2)}`;
  }
  function agentName(meta) { return meta && meta.agent && typeof meta.agent === "object" ? meta.agent.name : meta.agent || ""; }

  // A stored full E.164 number is shown masked until revealed; masked and hashed forms stay as stored.
  function isFullNumber(n) { return typeof n === "string" && /^\+\d{6,15}$/.test(n); }
  function masked(n) { return "•••" + n.slice(-4); }
  function numberNode(n, revealed, onToggle) {
    if (!n) return el("span", { class: "muted" }, "—");
    if (!isFullNumber(n)) return el("span", { class: "number", title: "as stored (redacted)" }, n);
    const text = el("span", {}, revealed ? n : masked(n));
    const wrap = el("span", { class: "number" }, text);
    if (page === "call") {
      const btn = el("button", { type: "button", class: "reveal", "aria-pressed": String(!!revealed), "aria-label": "Show full number" }, revealed ? "hide" : "show");
      btn.addEventListener("click", () => {
        const on = btn.getAttribute("aria-pressed") !== "true";
        btn.setAttribute("aria-pressed", String(on));
        btn.textContent = on ? "hide" : "show";
        text.textContent = on ? n : masked(n);
        if (onToggle) onToggle(on);
      });
      wrap.append(btn);
    }
    return wrap;
  }

  function statusPill(status) { return el("span", { class: "pill", dataset: { state: status || "" } }, (status || "?").replace("_", " ")); }

  // ------------------------------------------------------------------ live feed (SSE)

  const listeners = [];
  function onFeed(fn) { listeners.push(fn); }
  function connectFeed() {
    const conn = $("conn");
    const source = new EventSource("/api/v1/events");
    const setConn = (s, label) => { if (conn) { conn.dataset.state = s; conn.textContent = label; } };
    source.onopen = () => setConn("live", "live");
    source.onerror = () => setConn("down", "reconnecting…");
    for (const name of ["call.started", "call.updated", "call.ended", "transcript", "call.event", "config.reloaded"]) {
      source.addEventListener(name, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch (_) { return; }
        for (const fn of listeners) fn(name, data);
      });
    }
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  // ------------------------------------------------------------------ dashboard page

  function initIndex() {
    const live = new Map(); // call_id → {call_id, agent, caller, callee, started, status}
    const liveList = $("live-list");
    const filters = { status: "", agent: "", since: "", search: "" };
    let cursors = [null]; // cursor of each page we visited; the last is the current page's
    let nextCursor = null;
    let rows = [];

    function renderLive() {
      liveList.replaceChildren();
      const items = [...live.values()].sort((a, b) => (b.started || "").localeCompare(a.started || ""));
      for (const c of items) {
        const timer = el("span", { class: "timer", dataset: { since: c.started || "" } }, c.started ? fmtDuration(Date.now() - parseTs(c.started)) : "");
        liveList.append(el("li", { dataset: { call: c.call_id } },
          el("a", { href: `/calls/${encodeURIComponent(c.call_id)}` },
            el("span", { class: "dot", "aria-hidden": "true" }),
            el("span", { class: "who" },
              el("strong", {}, c.agent || "agent"),
              el("span", { class: "muted small" }, c.caller ? (isFullNumber(c.caller) && !state.revealAll ? masked(c.caller) : c.caller) : c.direction || "", " · ", (c.status || "").replace("_", " "))),
            timer)));
      }
      $("live-count").textContent = String(items.length);
      $("live-empty").hidden = items.length > 0;
    }
    setInterval(() => {
      for (const t of liveList.querySelectorAll(".timer[data-since]")) {
        const d = parseTs(t.dataset.since);
        if (d) t.textContent = fmtDuration(Date.now() - d);
      }
    }, 1000);

    function matches(meta, q) {
      if (!q) return true;
      const hay = [meta.call_id, meta.caller, meta.callee, agentName(meta), meta.status, meta.direction].join(" ").toLowerCase();
      return q.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
    }

    function row(meta, fresh) {
      const cost = meta.cost && typeof meta.cost === "object" ? meta.cost.total : null;
      const p50 = meta.latency && typeof meta.latency === "object" ? meta.latency.p50_ms : null;
      return el("tr", { class: fresh ? "fresh" : "", dataset: { call: meta.call_id } },
        el("td", {}, el("a", { href: `/calls/${encodeURIComponent(meta.call_id)}`, title: meta.call_id }, fmtTime(meta.started_at))),
        el("td", {}, statusPill(meta.status)),
        el("td", {}, agentName(meta)),
        el("td", {}, numberNode(meta.caller, state.revealAll)),
        el("td", {}, numberNode(meta.callee, state.revealAll)),
        el("td", { class: "num" }, LIVE.has(meta.status) ? "live" : fmtDuration(meta.duration_ms)),
        el("td", { class: "num" }, meta.turns ?? "—"),
        el("td", { class: "num" }, fmtMs(p50)),
        el("td", { class: "num" }, fmtCost(cost)));
    }

    function renderRows(freshId) {
      const body = $("history");
      body.replaceChildren(...rows.map((m) => row(m, m.call_id === freshId)));
      $("history-empty").hidden = rows.length > 0;
    }

    function query(limit, cursor) {
      const q = new URLSearchParams({ limit: String(limit) });
      if (filters.status) q.set("status", filters.status);
      if (filters.agent) q.set("agent", filters.agent);
      if (filters.since) {
        const d = new Date(filters.since + "T00:00:00");
        if (!isNaN(d)) q.set("since", d.toISOString());
      }
      if (cursor) q.set("cursor", cursor);
      return "/api/v1/calls?" + q.toString();
    }

    async function loadPage(freshId) {
      const info = $("page-info");
      try {
        if (filters.search) {
          // Search scans the most recent calls (up to 2,000) for the words, across pages.
          let found = [], cursor = null, scanned = 0;
          do {
            const res = await api(query(500, cursor));
            scanned += res.calls.length;
            found = found.concat(res.calls.filter((m) => matches(m, filters.search)));
            cursor = res.next_cursor;
          } while (cursor && scanned < 2000 && found.length < 100);
          rows = found.slice(0, 100);
          nextCursor = null;
          info.textContent = `${rows.length} match${rows.length === 1 ? "" : "es"} in the ${scanned} most recent calls`;
        } else {
          const res = await api(query(25, cursors[cursors.length - 1]));
          rows = res.calls;
          nextCursor = res.next_cursor;
          info.textContent = rows.length ? `page ${cursors.length}` : "";
        }
        renderRows(freshId);
      } catch (err) {
        toast("Could not load calls: " + err.message, "error");
      }
      $("page-next").disabled = !nextCursor;
      $("page-prev").disabled = cursors.length < 2 || !!filters.search;
      $("page-first").disabled = cursors.length < 2 || !!filters.search;
    }
    const reloadFirstPage = debounce((freshId) => { if (cursors.length === 1) loadPage(freshId); }, 300);

    function resetAndLoad() { cursors = [null]; loadPage(); }
    $("f-status").addEventListener("change", (e) => { filters.status = e.target.value; resetAndLoad(); });
    $("f-agent").addEventListener("change", (e) => { filters.agent = e.target.value; resetAndLoad(); });
    $("f-since").addEventListener("change", (e) => { filters.since = e.target.value; resetAndLoad(); });
    $("f-search").addEventListener("input", debounce((e) => { filters.search = e.target.value.trim(); resetAndLoad(); }, 250));
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("f-reveal").addEventListener("change", (e) => { state.revealAll = e.target.checked; renderRows(); renderLive(); });
    $("page-next").addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); loadPage(); } });
    $("page-prev").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); loadPage(); } });
    $("page-first").addEventListener("click", () => { cursors = [null]; loadPage(); });

    async function refreshChart() {
      try {
        const [svg, stats] = await Promise.all([
          fetch("/dashboard/chart.svg", { credentials: "same-origin" }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(String(r.status))))),
          api("/dashboard/stats.json"),
        ]);
        $("chart").innerHTML = svg; // rendered and escaped by the server (metrics_svg.py)
        const t = stats.totals;
        const parts = [`${t.calls} call${t.calls === 1 ? "" : "s"}`, `${t.failed} failed`];
        if (t.p50_ms !== null) parts.push(`p50 ${Math.round(t.p50_ms)} ms`);
        if (t.p95_ms !== null) parts.push(`p95 ${Math.round(t.p95_ms)} ms`);
        if (t.cost_usd) parts.push(`$${t.cost_usd.toFixed(4)}`);
        $("chart-totals").textContent = parts.join(" · ");
      } catch (_) { /* the next event retries */ }
    }
    const refreshChartSoon = debounce(refreshChart, 800);

    let startedAt = parseTs($("st-uptime").dataset.started);
    async function refreshStatus() {
      try {
        const st = await api("/api/v1/status");
        const pill = $("st-state");
        pill.textContent = st.state;
        pill.dataset.state = st.state;
        $("st-version").textContent = st.version;
        $("st-digest").textContent = (st.config_digest || "").slice(0, 12);
        $("st-digest").title = st.config_digest || "";
        $("st-generation").textContent = `generation ${st.config_generation}`;
        $("st-carrier").textContent = st.carrier;
        $("st-records").textContent = String(st.store && st.store.records !== undefined ? st.store.records : "—");
        startedAt = parseTs(st.started_at) || startedAt;
        return st;
      } catch (err) {
        $("st-state").textContent = "unreachable";
        $("st-state").dataset.state = "error";
        return null;
      }
    }
    setInterval(() => {
      if (!startedAt) return;
      const s = Math.floor((Date.now() - startedAt) / 1000);
      const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
      $("st-uptime").textContent = d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
    }, 1000);
    setInterval(refreshStatus, 15000);

    $("reload").addEventListener("click", async (e) => {
      const btn = e.currentTarget;
      btn.disabled = true;
      try {
        const res = await api("/api/v1/reload", { method: "POST" });
        toast(`Config reloaded (generation ${res.generation})`);
        refreshStatus();
      } catch (err) {
        toast("Reload refused: " + err.message, "error");
      } finally {
        btn.disabled = false;
      }
    });

    const openPhone = $("open-phone");
    openPhone.addEventListener("click", () => {
      const slot = $("phone-slot");
      slot.hidden = false;
      openPhone.setAttribute("aria-expanded", "true");
      slot.scrollIntoView({ behavior: "smooth", block: "start" });
      if (window.patterdPhone && window.patterdPhone.state === "idle") window.patterdPhone.call();
    });

    onFeed((name, data) => {
      if (name === "call.started") {
        live.set(data.call_id, { call_id: data.call_id, agent: data.agent, caller: data.caller, callee: data.callee, direction: data.direction, started: data.ts, status: "ringing" });
        renderLive();
        reloadFirstPage(data.call_id);
      } else if (name === "call.updated") {
        const c = live.get(data.call_id);
        if (c) { c.status = data.status; renderLive(); }
        reloadFirstPage();
      } else if (name === "call.ended") {
        live.delete(data.call_id);
        renderLive();
        reloadFirstPage();
        refreshChartSoon();
        refreshStatus();
      } else if (name === "config.reloaded") {
        refreshStatus();
      }
    });

    (async () => {
      const [st, first] = await Promise.all([refreshStatus(), api("/api/v1/calls?limit=50").catch(() => ({ calls: [] }))]);
      const byId = new Map(first.calls.map((m) => [m.call_id, m]));
      for (const s of (st && st.live_calls) || []) {
        if (live.has(s.call_id)) continue;
        const m = byId.get(s.call_id) || {};
        live.set(s.call_id, { call_id: s.call_id, agent: s.agent, caller: m.caller, callee: m.callee, direction: s.direction, started: m.started_at, status: s.status });
      }
      renderLive();
    })();
    loadPage();
  }

  // ------------------------------------------------------------------ call page

  function initCall() {
    const dataEl = $("call-data");
    let record = JSON.parse(dataEl.textContent);
    const callId = record.metadata.call_id;
    const revealed = new Set();
    const toggle = (key, on) => { if (on) revealed.add(key); else revealed.delete(key); };

    function kv(target, pairs) {
      target.replaceChildren();
      for (const [k, v] of pairs) target.append(el("dt", {}, k), el("dd", {}, v));
    }

    function render() {
      const m = record.metadata;
      const isLive = record.live && LIVE.has(m.status);
      const status = $("call-status");
      status.textContent = (m.status || "?").replace("_", " ");
      status.dataset.state = m.status || "";
      $("call-actions").hidden = !isLive;
      kv($("call-summary"), [
        ["Agent", `${agentName(m)}${m.agent && m.agent.provider ? " (" + m.agent.provider + ")" : ""}`],
        ["Direction", m.direction || "—"],
        ["From", numberNode(m.caller, revealed.has("caller"), (on) => toggle("caller", on))],
        ["To", numberNode(m.callee, revealed.has("callee"), (on) => toggle("callee", on))],
        ["Carrier", m.telephony_provider || "—"],
        ["Started", fmtTime(m.started_at)],
        ["Duration", isLive ? "live" : fmtDuration(m.duration_ms)],
        ["Turns", m.turns ?? "—"],
        ["Barge-ins", m.barge_ins ?? "—"],
        ...(m.answered_by ? [["Answered by", m.answered_by]] : []),
        ...(m.recording_url ? [["Recording", el("a", { href: m.recording_url, rel: "noopener noreferrer", target: "_blank" }, "listen")]] : []),
        ...(m.error ? [["Error", el("span", { class: "error" }, m.error)]] : []),
        ["Trace", el("code", {}, m.trace_id || "—")],
      ]);
      const cost = m.cost || {};
      kv($("call-cost"), [["Total", fmtCost(cost.total)], ["STT", fmtCost(cost.stt)], ["LLM", fmtCost(cost.llm)], ["TTS", fmtCost(cost.tts)], ["Telephony", fmtCost(cost.telephony)]]);
      const lat = m.latency || {};
      kv($("call-latency"), [["p50", fmtMs(lat.p50_ms)], ["p95", fmtMs(lat.p95_ms)], ["p99", fmtMs(lat.p99_ms)]]);

      const chat = $("chat");
      chat.replaceChildren();
      for (const line of record.transcript) {
        const meta = el("span", { class: "meta" }, el("time", { datetime: line.ts }, fmtTime(line.ts)));
        if (line.latency_ms != null) meta.append(el("span", { title: "caller speech end → first agent audio" }, `turn ${fmtMs(line.latency_ms)}`));
        if (line.stt_ms != null) meta.append(el("span", {}, `stt ${fmtMs(line.stt_ms)}`));
        if (line.llm_ttft_ms != null) meta.append(el("span", {}, `llm ${fmtMs(line.llm_ttft_ms)}`));
        if (line.tts_ttfb_ms != null) meta.append(el("span", {}, `tts ${fmtMs(line.tts_ttfb_ms)}`));
        if (line.cost != null) meta.append(el("span", {}, fmtCost(line.cost)));
        if (line.interrupted) meta.append(el("span", { class: "cut" }, "interrupted"));
        const who = line.role === "assistant" ? "Agent" : "Caller";
        chat.append(el("li", { class: line.role === "assistant" ? "assistant" : "user" },
          el("span", { class: "sr-only" }, who + ": "), el("span", { class: "bubble" }, line.text), meta));
      }
      $("chat-empty").hidden = record.transcript.length > 0;

      const tl = $("timeline");
      tl.replaceChildren();
      for (const ev of record.events) {
        const data = ev.data && Object.keys(ev.data).length ? JSON.stringify(ev.data) : "";
        tl.append(el("li", { class: ev.type === "error" ? "error" : "" },
          el("time", { class: "when", datetime: ev.ts }, fmtTime(ev.ts)),
          el("span", { class: "type" }, ev.type),
          data ? el("span", { class: "data" }, data) : null));
      }
    }

    const refetch = debounce(async () => {
      try {
        const fresh = await api(`/api/v1/calls/${encodeURIComponent(callId)}`);
        fresh.live = record.live;
        record = fresh;
        render();
      } catch (_) { /* keep what we show */ }
    }, 200);

    onFeed((name, data) => {
      if (data.call_id !== callId) return;
      if (name === "transcript") { // show it at once; the refetch brings the stored line with its metrics
        record.transcript.push({ ts: data.ts, role: data.role, text: data.text, latency_ms: data.latency_ms, interrupted: data.interrupted });
        render();
      }
      if (name === "call.ended") record.live = false;
      refetch();
    });

    $("hangup").addEventListener("click", async (e) => {
      const btn = e.currentTarget;
      btn.disabled = true;
      try {
        await api(`/api/v1/calls/${encodeURIComponent(callId)}/hangup`, { method: "POST" });
        toast("Hanging up…");
      } catch (err) {
        toast("Hang-up failed: " + err.message, "error");
      } finally {
        btn.disabled = false;
      }
    });
    $("transfer-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const to = $("transfer-to").value.trim();
      try {
        await api(`/api/v1/calls/${encodeURIComponent(callId)}/transfer`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ to }),
        });
        toast(`Transferring to ${to}…`);
      } catch (err) {
        toast("Transfer failed: " + err.message, "error");
      }
    });
    render();
  }

  // ------------------------------------------------------------------ start

  window.patterdDashboard = { api, toast };
  if (page === "index" || page === "call") {
    const conn = $("conn");
    if (conn) conn.hidden = false;
    if (page === "index") initIndex(); else initCall();
    connectFeed();
  }
})();
