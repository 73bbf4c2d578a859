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
  // One format for every amount on every page: dollars with 4 decimals (calls cost fractions of a cent).
  function fmtCost(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    return `$${v.toFixed(4)}`;
  }
  // Times are the browser's local time everywhere (table, call page, chart), labelled with its zone.
  const TZ = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (_) { return "UTC"; } })();
  // Only http(s) URLs become links; anything else (javascript:, data:, …) is shown as text.
  function safeHref(u) {
    if (typeof u !== "string" || !u) return null;
    try {
      const url = new URL(u, location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) { return null; }
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

  // A call that ended "completed" but had errors (e.g. the agent failed every turn) gets a warning state.
  function statusPill(status, errors) {
    const label = (status || "?").replace("_", " ");
    if (errors > 0 && status === "completed") {
      return el("span", { class: "pill", dataset: { state: "warning" }, title: `${errors} error event${errors === 1 ? "" : "s"} during the call` }, `${label} · errors`);
    }
    return el("span", { class: "pill", dataset: { state: status || "" } }, label);
  }

  // ------------------------------------------------------------------ live feed (SSE)

  // The page reconnects itself, starting at 250 ms and doubling up to 2 s: EventSource's own retry
  // waits ~3 s and gives up for good when the daemon answers an error while restarting. Listeners
  // hear "open" (connected again: refetch what may have been missed) and "down".
  const listeners = [];
  const connListeners = [];
  function onFeed(fn) { listeners.push(fn); }
  function onConnection(fn) { connListeners.push(fn); }
  const RETRY_FIRST_MS = 250, RETRY_MAX_MS = 2000;
  let retryMs = RETRY_FIRST_MS, retryTimer = 0, source = null, everOpened = false;
  function connectFeed() {
    const conn = $("conn");
    const setConn = (s, label) => { if (conn) { conn.dataset.state = s; conn.textContent = label; } };
    clearTimeout(retryTimer);
    const es = new EventSource("/api/v1/events");
    source = es;
    es.onopen = () => {
      retryMs = RETRY_FIRST_MS;
      setConn("live", "live");
      const again = everOpened;
      everOpened = true;
      for (const fn of connListeners) fn("open", again);
    };
    es.onerror = () => {
      if (source !== es) return;
      setConn("down", "reconnecting…");
      es.close();
      for (const fn of connListeners) fn("down");
      retryTimer = setTimeout(connectFeed, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
    for (const name of ["call.started", "call.updated", "call.ended", "transcript", "call.event", "config.reloaded"]) {
      es.addEventListener(name, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch (_) { return; }
        for (const fn of listeners) fn(name, data);
      });
    }
  }
  window.addEventListener("pagehide", () => { clearTimeout(retryTimer); if (source) source.close(); source = null; });

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
      const hay = [meta.call_id, meta.caller, meta.callee, agentName(meta), meta.status, meta.direction, meta.source].join(" ").toLowerCase();
      return q.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
    }

    // The whole row opens the call: a click anywhere on it (bar its own buttons and links), or
    // Enter on the focused row; the time stays a real link (middle-click, screen readers).
    function row(meta, fresh) {
      const cost = meta.cost && typeof meta.cost === "object" ? meta.cost.total : null;
      const p50 = meta.latency && typeof meta.latency === "object" ? meta.latency.p50_ms : null;
      const href = `/calls/${encodeURIComponent(meta.call_id)}`;
      const tr = el("tr", { class: "clickable" + (fresh ? " fresh" : ""), tabindex: "0", dataset: { call: meta.call_id, href }, "aria-label": `Call ${meta.call_id}, ${fmtTime(meta.started_at)}, ${meta.status || ""}` },
        el("td", {}, el("a", { href, title: meta.call_id, tabindex: "-1" }, fmtTime(meta.started_at))),
        el("td", {}, statusPill(meta.status, meta.errors)),
        // A call another daemon (or a Patter app) reported names where it ran (docs/operations.md, fleet).
        el("td", {}, agentName(meta), meta.source ? el("span", { class: "muted small source", title: "reported by" }, ` @ ${meta.source}`) : null),
        el("td", {}, numberNode(meta.caller, state.revealAll)),
        el("td", {}, numberNode(meta.callee, state.revealAll)),
        el("td", { class: "num" }, LIVE.has(meta.status) ? "live" : fmtDuration(meta.duration_ms)),
        el("td", { class: "num" }, meta.turns ?? "—"),
        el("td", { class: "num" }, fmtMs(p50)),
        el("td", { class: "num" }, fmtCost(cost)));
      tr.addEventListener("click", (e) => {
        if (e.target.closest("a, button, input, select")) return;
        if (window.getSelection && String(window.getSelection()).length) return; // selecting text, not opening
        location.href = href;
      });
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && e.target === tr) { e.preventDefault(); location.href = href; }
      });
      return tr;
    }

    let shownRows = null; // what the table shows, to skip re-rendering (and losing focus) when nothing changed
    function renderRows(freshId) {
      const body = $("history");
      const sig = JSON.stringify([rows, state.revealAll]);
      if (sig === shownRows && !freshId) return false;
      const before = shownRows;
      const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("tr[data-call]") : null;
      const focusId = focused && body.contains(focused) ? focused.dataset.call : null;
      shownRows = sig;
      body.replaceChildren(...rows.map((m) => row(m, m.call_id === freshId)));
      if (focusId) { const again = body.querySelector(`tr[data-call="${CSS.escape(focusId)}"]`); if (again) again.focus(); }
      $("history-empty").hidden = rows.length > 0;
      return before !== null; // a change after the first drawing (the chart may have changed too)
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

    async function loadPage(freshId, quiet) {
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
        if (renderRows(freshId)) refreshChartSoon();
      } catch (err) {
        if (!quiet) toast("Could not load calls: " + err.message, "error");
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
    // Calls this daemon did not run (`patterd simulate` is its own process writing to the same
    // records) never reach the live feed; the first page is re-read every few seconds while the page
    // is visible, and only redrawn when it changed.
    const POLL_MS = window.patterdPollMs || 5000; // tests shorten it
    setInterval(() => {
      if (document.visibilityState !== "visible" || cursors.length !== 1 || filters.search) return;
      loadPage(undefined, true);
    }, POLL_MS);
    $("page-next").addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); loadPage(); } });
    $("page-prev").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); loadPage(); } });
    $("page-first").addEventListener("click", () => { cursors = [null]; loadPage(); });

    // The chart is drawn by the server at the box's real width (text stays 12 px) in this browser's zone;
    // a narrow screen gets the most recent hours.
    let chartWidth = 0;
    async function refreshChart() {
      const box = $("chart");
      const width = Math.max(280, Math.floor(box.clientWidth || 960));
      const q = new URLSearchParams({ width: String(width), tz: TZ });
      try {
        const [svg, stats] = await Promise.all([
          fetch("/dashboard/chart.svg?" + q.toString(), { credentials: "same-origin" }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(String(r.status))))),
          api("/dashboard/stats.json"),
        ]);
        box.innerHTML = svg; // rendered and escaped by the server (metrics_svg.py)
        chartWidth = width;
        const drawn = box.querySelector("svg");
        const hoursShown = drawn && drawn.dataset.hours ? Number(drawn.dataset.hours) : 24;
        $("chart-h").textContent = `Last ${hoursShown} hours`;
        const t = stats.totals;
        const parts = [`${t.calls} call${t.calls === 1 ? "" : "s"}`, `${t.failed} failed`];
        if (t.p50_ms !== null) parts.push(`p50 ${Math.round(t.p50_ms)} ms`);
        if (t.p95_ms !== null) parts.push(`p95 ${Math.round(t.p95_ms)} ms`);
        if (t.cost_usd) parts.push(fmtCost(t.cost_usd));
        $("chart-totals").textContent = (hoursShown !== stats.hours.length ? `${stats.hours.length} h: ` : "") + parts.join(" · ");
      } catch (_) { /* the next event retries */ }
    }
    const refreshChartSoon = debounce(refreshChart, 800);
    window.addEventListener("resize", debounce(() => {
      if (Math.abs(Math.floor($("chart").clientWidth) - chartWidth) > 8) refreshChart();
    }, 200));
    refreshChart();
    $("tz-note").textContent = `(${TZ})`;

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
        showUptime();
        return st;
      } catch (err) {
        showUnreachable();
        return null;
      }
    }
    // While the daemon does not answer, say so and drop what may be stale (uptime, live calls).
    function showUnreachable() {
      $("st-state").textContent = "unreachable";
      $("st-state").dataset.state = "error";
      startedAt = null;
      for (const id of ["st-uptime", "st-records"]) $(id).textContent = "—";
      $("st-generation").textContent = "";
      live.clear();
      renderLive();
    }
    function showUptime() {
      if (!startedAt) return;
      const s = Math.max(0, Math.floor((Date.now() - startedAt) / 1000));
      const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
      $("st-uptime").textContent = d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
    }
    setInterval(showUptime, 1000);
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
      // Any state but a call in progress: idle, or after an earlier call (ended, error).
      const phone = window.patterdPhone;
      if (phone && phone.state !== "connecting" && phone.state !== "connected") phone.call();
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

    // The live list comes from the status (calls already running) and then the feed.
    let multiWorker = false; // server.workers: the feed is one worker's; the others' calls come from the status
    async function loadLive(replace) {
      const [st, first] = await Promise.all([refreshStatus(), api("/api/v1/calls?limit=50").catch(() => ({ calls: [] }))]);
      if (!st) return;
      multiWorker = Array.isArray(st.workers);
      if (replace) live.clear();
      const byId = new Map(first.calls.map((m) => [m.call_id, m]));
      for (const s of st.live_calls || []) {
        if (live.has(s.call_id)) continue;
        const m = byId.get(s.call_id) || {};
        live.set(s.call_id, { call_id: s.call_id, agent: s.agent, caller: m.caller, callee: m.callee, direction: s.direction, started: m.started_at, status: s.status });
      }
      renderLive();
    }
    onConnection((what, again) => {
      if (what === "down") { refreshStatus(); return; } // unreachable at once if the daemon is gone
      if (again) { loadLive(true); loadPage(undefined, true); refreshChart(); } // connected again: catch up
    });
    setInterval(() => {
      if (multiWorker && document.visibilityState === "visible") loadLive(true);
    }, POLL_MS);
    loadLive(false);
    loadPage();
  }

  // ------------------------------------------------------------------ call page

  // Turn latency stages, in the order they happen (latency_fields contract). Pipeline turns have
  // endpointing → stt → llm → tts → transport; realtime turns engine → transport.
  const STAGES = [
    ["endpointing_ms", "endpointing", "last voiced frame → end of turn decided (VAD silence window / STT endpointing)"],
    ["stt_ms", "stt", "end of turn → final transcript"],
    ["llm_ttft_ms", "llm", "transcript sent to the LLM → first token"],
    ["tts_ttfb_ms", "tts", "first text sent to the TTS → first audio byte"],
    ["engine_ms", "engine", "last voiced frame sent to the engine → first agent audio from it"],
    ["transport_ms", "transport", "first audio byte → first frame on the carrier socket (chunking, resampling, queues, gaps)"],
  ];
  const TURN_MEANING = "from the caller's last voiced audio to the first agent audio sent to the carrier";
  // Outside latency_ms: what a caller that reports it (a receiver report) heard beyond it (heard_ms - latency_ms).
  const NETWORK = ["network_ms", "network", "caller → daemon and daemon → caller: both one-way trips, from the caller's own report"];

  // A stacked bar of one turn's stages, `scale` ms = full width; the segments sum to latency_ms (a
  // remainder the stages do not explain is its own "other" segment), plus the network bar when the caller
  // reported what it heard: then they sum to heard_ms, and the total reads "caller heard N ms".
  function waterfall(line, scale) {
    const latency = line.latency_ms;
    const heard = typeof line.heard_ms === "number" ? line.heard_ms : null;
    const total = heard !== null ? Math.max(heard, latency) : latency;
    const parts = STAGES.filter(([key]) => typeof line[key] === "number" && line[key] > 0).map(([key, name, what]) => ({ name, what, ms: line[key] }));
    const staged = parts.reduce((a, p) => a + p.ms, 0);
    if (latency - staged >= 0.5) parts.push({ name: "other", what: "not attributed to a stage", ms: latency - staged });
    if (heard !== null && typeof line.network_ms === "number" && line.network_ms > 0) {
      parts.push({ name: NETWORK[1], what: NETWORK[2], ms: line.network_ms });
    }
    const sum = parts.reduce((a, p) => a + p.ms, 0);
    const fit = sum > total ? total / sum : 1; // stages that overlap are drawn within the total
    const detail = parts.map((p) => `${p.name} ${fmtMs(p.ms)}`).join(" · ");
    const title = (heard !== null ? `Caller heard ${fmtMs(heard)}; turn latency ${fmtMs(latency)}` : `Turn latency ${fmtMs(total)}`) +
      `, ${TURN_MEANING}.` + (detail ? `\n${detail}` : "");
    const bar = el("span", { class: "wf-bar" });
    bar.style.width = `${Math.max(2, (100 * total) / scale)}%`; // CSSOM, allowed by the CSP (style attributes are not)
    for (const p of parts) {
      const share = (p.ms * fit) / total;
      // Segments too narrow for their name carry it in the tooltip and the breakdown line below.
      const seg = el("span", { class: `wf-seg wf-${p.name}`, title: `${p.name}: ${fmtMs(p.ms)} — ${p.what}`, dataset: { stage: p.name, ms: String(p.ms) } },
        share * total / scale >= 0.2 ? el("span", { class: "wf-label" }, `${p.name} ${Math.round(p.ms)}`) : null);
      seg.style.width = `${(100 * p.ms * fit) / total}%`;
      bar.append(seg);
    }
    const data = heard !== null ? { total: String(total), heard: String(heard) } : { total: String(total) };
    return el("span", { class: "waterfall", role: "img", title, "aria-label": title, dataset: data },
      el("span", { class: "wf-row" }, el("span", { class: "wf-track" }, bar),
        el("span", { class: "wf-total" }, heard !== null ? `caller heard ${fmtMs(heard)}` : fmtMs(total))),
      detail ? el("span", { class: "wf-detail" }, detail) : null);
  }

  function stageLegend() {
    const dl = el("p", { class: "wf-legend small muted" }, `Turn latency is measured ${TURN_MEANING}: `);
    for (const [, name, what] of [...STAGES, ["", "other", "not attributed to a stage"], NETWORK]) {
      dl.append(el("span", { class: "wf-key", title: what }, el("span", { class: `wf-swatch wf-${name}`, "aria-hidden": "true" }), name));
    }
    return dl;
  }

  // Readable events: a headline per type with its key fields; the raw JSON behind a toggle.
  function eventSummary(ev) {
    const d = ev.data && typeof ev.data === "object" ? ev.data : {};
    const n = (v, unit) => (typeof v === "number" ? `${Math.round(v)}${unit || ""}` : "");
    switch (ev.type) {
      case "call_started": return [`${d.direction || "inbound"} call to ${d.agent || "an agent"}`, d.carrier ? `via ${d.carrier}` : ""];
      case "status": return [`status ${String(d.status || "").replace("_", " ")}`];
      case "call_ended": return [`ended ${d.status || ""}`, d.reason ? `(${d.reason})` : "", d.duration_ms != null ? fmtDuration(d.duration_ms) : "", d.error ? `error: ${d.error}` : ""];
      case "tool_call": return [`tool ${d.name || "?"}`, d.error ? `failed: ${d.error}` : d.result ? `→ ${String(d.result).slice(0, 120)}` : "", n(d.duration_ms, " ms")];
      case "barge_in": return ["caller interrupted", d.played_ms != null ? `after ${n(d.played_ms, " ms")} of agent audio` : "", d.reaction_ms != null ? `cleared in ${n(d.reaction_ms, " ms")}` : ""];
      case "dtmf": return [`key ${d.digit || "?"}`];
      case "transfer": return [`transfer to ${d.to || "?"}`];
      case "error": return [`${d.component ? d.component + " " : ""}error${d.fatal ? " (fatal)" : ""}`, d.message || ""];
      case "provider_fallback": return [`${String(d.kind || "provider").toUpperCase()} switched from ${d.from || "?"} to ${d.to || "?"}`, d.reason ? `(${d.reason})` : ""];
      case "usage": return [`usage ${d.component || ""}`, d.provider || "", Object.entries(d.quantities || {}).map(([k, v]) => `${k} ${Math.round(v * 100) / 100}`).join(", ")];
      case "first_audio": return [`first agent audio after ${n(d.first_audio_ms, " ms")}`];
      case "turn_heard": return [`caller heard ${n(d.heard_ms, " ms")}`, `turn latency ${n(d.latency_ms, " ms")} + network ${n(d.network_ms, " ms")}`];
      case "amd": return [`answered by ${d.answered_by || "unknown"}`];
      case "recording": return ["recording ready", d.duration_secs != null ? `${Math.round(d.duration_secs)} s` : ""];
      default: return [String(ev.type || "event").replace(/_/g, " "), Object.entries(d).filter(([, v]) => v === null || typeof v !== "object").slice(0, 4).map(([k, v]) => `${k} ${v}`).join(", ")];
    }
  }

  function initCall() {
    const dataEl = $("call-data");
    let record = JSON.parse(dataEl.textContent);
    const callId = record.metadata.call_id;
    const canTransfer = !!record.can_transfer;
    const revealed = new Set();
    const openRaw = new Set(); // events whose raw JSON is open, kept across redraws
    const toggle = (key, on) => { if (on) revealed.add(key); else revealed.delete(key); };
    let interim = null; // the agent's words so far in the reply being spoken {turn, text}

    function kv(target, pairs) {
      target.replaceChildren();
      for (const [k, v] of pairs) target.append(el("dt", {}, k), el("dd", {}, v));
    }

    function errorCount() {
      const fromEvents = record.events.filter((e) => e.type === "error").length;
      return Math.max(fromEvents, record.metadata.errors || 0);
    }

    function chatLine(line, scale) {
      const meta = el("span", { class: "meta" }, el("time", { datetime: line.ts }, fmtTime(line.ts)));
      if (line.cost != null) meta.append(el("span", {}, fmtCost(line.cost)));
      if (line.interrupted) meta.append(el("span", { class: "cut" }, "interrupted"));
      const who = line.role === "assistant" ? "Agent" : "Caller";
      const hasWf = line.role === "assistant" && typeof line.latency_ms === "number";
      return el("li", { class: (line.role === "assistant" ? "assistant" : "user") + (hasWf ? " has-wf" : "") },
        el("span", { class: "sr-only" }, who + ": "), el("span", { class: "bubble" }, line.text), meta,
        line.role === "assistant" && typeof line.latency_ms === "number" ? waterfall(line, scale) : null);
    }

    function render() {
      const m = record.metadata;
      const isLive = record.live && LIVE.has(m.status);
      const status = $("call-status");
      status.replaceWith(Object.assign(statusPill(m.status, errorCount()), { id: "call-status" }));
      $("call-actions").hidden = !isLive;
      $("transfer-form").hidden = !canTransfer;
      const recording = m.recording_url ? safeHref(m.recording_url) : null;
      kv($("call-summary"), [
        ["Agent", `${agentName(m)}${m.agent && m.agent.provider ? " (" + m.agent.provider + ")" : ""}`],
        ["Direction", m.direction || "—"],
        ["From", numberNode(m.caller, revealed.has("caller"), (on) => toggle("caller", on))],
        ["To", numberNode(m.callee, revealed.has("callee"), (on) => toggle("callee", on))],
        ["Carrier", m.telephony_provider || "—"],
        ["Started", el("span", {}, fmtTime(m.started_at), " ", el("span", { class: "tz" }, `(${TZ})`))],
        ["Duration", isLive ? "live" : fmtDuration(m.duration_ms)],
        ["Turns", m.turns ?? "—"],
        ["Barge-ins", m.barge_ins ?? "—"],
        ...(m.answered_by ? [["Answered by", m.answered_by]] : []),
        ...(m.recording_url ? [["Recording", recording
          ? el("a", { href: recording, rel: "noopener noreferrer", target: "_blank" }, "listen")
          : el("span", { class: "mono", title: "not an http(s) address: not a link" }, m.recording_url)]] : []),
        ...(m.error ? [["Error", el("span", { class: "error" }, m.error)]] : []),
        ...(errorCount() ? [["Errors", el("span", { class: "warn" }, `${errorCount()} error event${errorCount() === 1 ? "" : "s"} (see Events)`)]] : []),
        ["Trace", el("code", {}, m.trace_id || "—")],
      ]);
      const cost = m.cost || {};
      kv($("call-cost"), [["Total", fmtCost(cost.total)], ["STT", fmtCost(cost.stt)], ["LLM", fmtCost(cost.llm)], ["TTS", fmtCost(cost.tts)], ["Telephony", fmtCost(cost.telephony)]]);
      const lat = m.latency || {};
      kv($("call-latency"), [["p50", fmtMs(lat.p50_ms)], ["p95", fmtMs(lat.p95_ms)], ["p99", fmtMs(lat.p99_ms)]]);

      const chat = $("chat");
      const scale = Math.max(1, ...record.transcript.map((l) => Math.max(typeof l.latency_ms === "number" ? l.latency_ms : 0, typeof l.heard_ms === "number" ? l.heard_ms : 0)));
      chat.replaceChildren(...record.transcript.map((line) => chatLine(line, scale)));
      if (interim) {
        chat.append(el("li", { class: "assistant interim", dataset: { turn: interim.turn } },
          el("span", { class: "sr-only" }, "Agent (speaking): "), el("span", { class: "bubble" }, interim.text),
          el("span", { class: "meta" }, "speaking…")));
      }
      $("chat-empty").hidden = record.transcript.length > 0 || !!interim;

      const tl = $("timeline");
      tl.replaceChildren();
      record.events.forEach((ev, i) => {
        const key = `${i}:${ev.type}`;
        const raw = el("details", { class: "raw", open: openRaw.has(key) }, el("summary", {}, "raw JSON"), el("pre", {}, JSON.stringify(ev, null, 2)));
        raw.addEventListener("toggle", () => { if (raw.open) openRaw.add(key); else openRaw.delete(key); });
        const [head, ...rest] = eventSummary(ev);
        tl.append(el("li", { class: ev.type === "error" ? "is-error" : "", dataset: { type: ev.type } },
          el("time", { class: "when", datetime: ev.ts }, fmtTime(ev.ts)),
          el("span", { class: "type" }, head),
          rest.filter(Boolean).length ? el("span", { class: "data" }, rest.filter(Boolean).join(" · ")) : null,
          raw));
      });
    }

    const refetch = debounce(async () => {
      try {
        const fresh = await api(`/api/v1/calls/${encodeURIComponent(callId)}`);
        fresh.live = record.live;
        fresh.can_transfer = canTransfer;
        record = fresh;
        render();
      } catch (_) { /* keep what we show */ }
    }, 200);

    onFeed((name, data) => {
      if (data.call_id !== callId) return;
      if (name === "call.event" && data.type === "transcript_partial") { // the agent's words as they are spoken
        interim = { turn: data.turn, text: data.text };
        render();
        return;
      }
      if (name === "transcript") { // show it at once; the refetch brings the stored line with its metrics
        if (data.role === "assistant") interim = null;
        const line = Object.assign({}, data);
        delete line.call_id; delete line.type;
        record.transcript.push(line);
        render();
      }
      if (name === "call.ended") { record.live = false; interim = null; }
      refetch();
    });
    onConnection((what, again) => { if (what === "open" && again) refetch(); });

    $("call-latency").after(stageLegend());
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
