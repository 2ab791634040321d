// modelserve's live dashboard. Every 2 s it fetches /dashboard/api/state (models, versions, instances,
// configuration) and the Prometheus text at /metrics, computes rates and percentiles from two
// successive scrapes (promtext.js) and redraws. Everything it writes into the page goes through
// textContent: model names and error texts are data, never markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const KEEP = 150; // points per chart: five minutes at one point per poll
  const TOKEN_KEY = "modelserve.dashboard.token";
  const CONFIRM_MS = 4000;
  const P = globalThis.PromText;

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    state: null,
    metricsPath: "/metrics",
    metrics: null, // the last scrape: {t (seconds), data}
    series: new Map(), // chart key -> {t: [], values: [[]...]}
    charts: new Map(), // chart key -> uPlot
    cards: new Map(), // card key -> element
    drawn: 0,
    updates: 0,
    pending: null, // a button waiting for its second click: {key, until}
    busy: new Set(), // actions in progress
  };
  globalThis.modelserveDashboard = S; // for people and tests poking at it from the console

  // ---- small DOM helpers ----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (value === 0) return "0";
    const d = digits === undefined ? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2) : digits;
    return value.toFixed(d);
  }

  function ms(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const v = seconds * 1000;
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : fmt(v) + " ms";
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    if (n === 0) return "0";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    return m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
  }

  function pill(id, text, kind) {
    const node = $(id);
    node.textContent = text;
    node.className = "pill" + (kind ? " " + kind : "");
    node.hidden = false;
  }

  function notice(text, bad) {
    const node = $("notice");
    node.textContent = text;
    node.className = bad ? "bad" : "";
    node.hidden = !text;
  }

  // ---- fetching -------------------------------------------------------------------------------

  function authHeaders() {
    return S.token ? { authorization: "Bearer " + S.token } : {};
  }

  async function errorText(response) {
    try {
      const doc = await response.json();
      if (doc && doc.error) return doc.error;
    } catch (err) {
      /* not JSON: the status line says enough */
    }
    return `HTTP ${response.status}`;
  }

  async function fetchState() {
    const response = await fetch("/dashboard/api/state", { headers: authHeaders(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      return { denied: response.status, message: await errorText(response) };
    }
    if (!response.ok) throw new Error("state: " + (await errorText(response)));
    return { doc: await response.json() };
  }

  async function fetchMetrics() {
    if (!S.metricsPath) return { off: true };
    try {
      const response = await fetch(S.metricsPath, { cache: "no-store" });
      if (response.status === 404) return { off: true };
      if (!response.ok) return { error: `HTTP ${response.status}` };
      return { data: P.parse(await response.text()), t: performance.now() / 1000 };
    } catch (err) {
      return { error: String(err.message || err) };
    }
  }

  // ---- the poll loop --------------------------------------------------------------------------

  async function poll() {
    let fetched = null;
    try {
      fetched = await Promise.all([fetchState(), fetchMetrics()]);
      pill("pill-server", "live", "ok");
    } catch (err) {
      // fetch rejects with a TypeError when nothing answers; anything else is an answer we could not use.
      pill("pill-server", err instanceof TypeError ? "server unreachable" : String(err.message || err), "bad");
    }
    setTimeout(poll, POLL_MS);
    if (fetched === null) return;
    // Outside the try: a bug while drawing reaches the console (and the browser tests), not the pill.
    const [state, metrics] = fetched;
    if (state.denied) {
      askToken(state.denied, state.message);
      return;
    }
    $("token-box").hidden = true;
    S.state = state.doc;
    S.metricsPath = state.doc.server.metrics_path;
    render(state.doc, metrics);
  }

  function askToken(status, message) {
    $("token-box").hidden = false;
    $("token-error").textContent = S.token ? message : "";
    pill("pill-access", status === 403 ? "token lacks scope" : "token needed", "warn");
  }

  // ---- metrics -> numbers ---------------------------------------------------------------------

  // What one pair of scrapes says, per model and per batcher; null fields when it cannot say yet.
  function measure(before, after, models) {
    const dt = before === null ? 0 : after.t - before.t;
    const prev = before === null ? null : before.data;
    const cur = after.data;
    const result = { models: new Map(), batchers: new Map(), total: null, errors: null, inflight: null };
    result.inflight = P.sum(cur, "modelserve_inflight_requests", {});
    result.total = P.rate(prev, cur, dt, "modelserve_requests_total", {});
    result.errors = P.rate(prev, cur, dt, "modelserve_requests_total", { code: (c) => c !== "OK" });
    for (const name of models) {
      const only = { model: name };
      const q = (x) => P.quantile(x, prev, cur, "modelserve_request_duration_seconds", only);
      result.models.set(name, {
        rate: P.rate(prev, cur, dt, "modelserve_requests_total", only),
        errors: P.rate(prev, cur, dt, "modelserve_requests_total", { model: name, code: (c) => c !== "OK" }),
        p50: prev === null ? null : q(0.5),
        p90: prev === null ? null : q(0.9),
        p99: prev === null ? null : q(0.99),
      });
    }
    for (const key of batcherKeys(cur)) {
      const [model, version] = key.split("\u0000");
      const only = { model, version };
      result.batchers.set(key, {
        model,
        version,
        size: P.mean(prev, cur, "modelserve_batch_size", only),
        batches: P.rate(prev, cur, dt, "modelserve_batch_size_count", only),
        queue: P.sum(cur, "modelserve_queue_depth", only),
      });
    }
    return result;
  }

  // Every (model, version) that has a batch-size histogram or a queue-depth gauge: one per batcher.
  function batcherKeys(scrape) {
    const keys = new Set();
    for (const name of ["modelserve_batch_size_count", "modelserve_queue_depth"]) {
      for (const s of scrape.samples.get(name) || []) {
        keys.add((s.labels.model || "") + "\u0000" + (s.labels.version || ""));
      }
    }
    return [...keys].sort();
  }

  // ---- charts ---------------------------------------------------------------------------------

  const COLORS = ["#2f6fec", "#d64545", "#1f9d55", "#d98b06", "#8a4fd6"];

  function record(key, t, values) {
    let s = S.series.get(key);
    if (!s) {
      s = { t: [], values: values.map(() => []) };
      S.series.set(key, s);
    }
    s.t.push(t);
    values.forEach((v, i) => s.values[i].push(v === undefined ? null : v));
    if (s.t.length > KEEP) {
      s.t.shift();
      s.values.forEach((column) => column.shift());
    }
  }

  function chart(key, host, labels, unit) {
    let plot = S.charts.get(key);
    const width = Math.max(host.clientWidth, 280);
    if (!plot) {
      const value = (u, v) => (v === null || v === undefined ? "–" : fmt(v) + (unit ? " " + unit : ""));
      plot = new uPlot(
        {
          width,
          height: 180,
          cursor: { drag: { x: false, y: false } },
          legend: { live: false },
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1e-9) * 1.15] } },
          axes: [
            { stroke: "#6b7684", grid: { stroke: "#eef0f3" } },
            { stroke: "#6b7684", grid: { stroke: "#eef0f3" }, size: 56, values: (u, ticks) => ticks.map((v) => fmt(v)) },
          ],
          series: [
            { value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleTimeString()) },
            ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, value, points: { show: false } })),
          ],
          hooks: { draw: [() => { S.drawn += 1; document.body.dataset.drawn = String(S.drawn); }] },
        },
        [[], ...labels.map(() => [])],
        host,
      );
      S.charts.set(key, plot);
    } else if (Math.abs(plot.width - width) > 4) {
      plot.setSize({ width, height: 180 });
    }
    const s = S.series.get(key);
    if (s) plot.setData([s.t.slice(), ...s.values.map((c) => c.slice())]);
  }

  // One card per model or batcher, kept by key (keys may hold any character, so no selector lookups).
  function card(container, key, title) {
    let node = S.cards.get(key);
    if (!node) {
      node = el("div", { class: "card" }, el("div", { class: "title" }, el("b", { text: title }), el("span", { class: "muted small" })));
      S.cards.set(key, node);
      container.append(node);
    }
    return node;
  }

  function chartHost(parent, key) {
    let host = parent.querySelector(`[data-chart="${CSS.escape(key)}"]`);
    if (!host) {
      host = el("div", { class: "chart", "data-chart": key });
      parent.append(host);
    }
    return host;
  }

  // ---- rendering ------------------------------------------------------------------------------

  function render(doc, metrics) {
    const names = doc.models.map((m) => m.name);
    let measured = null;
    if (metrics.data) {
      const after = { t: metrics.t, data: metrics.data };
      measured = measure(S.metrics, after, names);
      S.metrics = after;
      pill("pill-metrics", "metrics on", "ok");
    } else {
      S.metrics = null;
      pill("pill-metrics", metrics.off ? "metrics off" : "metrics: " + metrics.error, metrics.off ? "" : "warn");
    }
    const now = Date.now() / 1000;
    if (measured) {
      for (const name of names) {
        const m = measured.models.get(name);
        record("traffic\u0000" + name, now, [m.rate, m.errors]);
        record("latency\u0000" + name, now, [m.p50, m.p90, m.p99].map((v) => (v === null ? null : v * 1000)));
      }
      for (const [key, b] of measured.batchers) record("batch\u0000" + key, now, [b.size, b.queue]);
    }
    renderHeader(doc);
    renderTiles(doc, measured);
    renderModels(doc, measured);
    renderModelCharts(doc, measured !== null);
    renderBatching(doc, measured);
    renderInstances(doc);
    renderConfig(doc);
    S.updates += 1;
    document.body.dataset.updates = String(S.updates);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function isAdmin(doc) {
    return doc.access.scope === "admin" && doc.access.management;
  }

  function renderHeader(doc) {
    $("server-version").textContent = doc.server.version;
    const access = doc.access;
    if (access.tokens) pill("pill-access", `token: ${access.scope}`, access.scope === "admin" ? "ok" : "");
    else $("pill-access").hidden = true;
    $("forget-token").hidden = !S.token;
    const reload = $("reload-config");
    reload.hidden = !(isAdmin(doc) && doc.config.reload);
    armButton(reload, "reload", "Reload config", "Confirm reload?");
  }

  function renderTiles(doc, measured) {
    const ready = doc.models.filter((m) => m.available.length > 0).length;
    $("tile-ready").textContent = `${ready} / ${doc.models.length}`;
    $("tile-uptime").textContent = duration(doc.server.now - doc.server.started);
    const total = measured ? measured.total : null;
    $("tile-rate").textContent = fmt(total);
    const errors = measured ? measured.errors : null;
    $("tile-errors").textContent = errors === null || !total ? fmt(errors) : `${fmt((100 * errors) / total, 1)} %`;
    $("tile-inflight").textContent = measured ? fmt(measured.inflight, 0) : "–";
  }

  function versionBadge(v) {
    const failed = v.error_message && v.state !== "AVAILABLE";
    return el("span", {
      class: "badge " + v.state + (failed ? " failed" : ""),
      "data-version": v.version,
      "data-state": v.state,
      title: v.error_message || v.state,
      text: `v${v.version} · ${v.state}`,
    });
  }

  function renderModels(doc, measured) {
    const admin = isAdmin(doc);
    fill(
      document.querySelector("#models tbody"),
      doc.models.map((model) => {
        const m = measured ? measured.models.get(model.name) : null;
        const rate = m ? m.rate : null;
        const errorShare = m && m.rate ? (100 * m.errors) / m.rate : m ? m.errors : null;
        const labels = Object.entries(model.labels).map(([k, v]) => el("span", { class: "chip", text: `${k} → ${v}` }));
        const versions = model.versions.length
          ? model.versions.map(versionBadge)
          : [el("span", { class: "badge NONE", text: model.reason || "no version" })];
        return el(
          "tr",
          { "data-model": model.name },
          el("td", {}, el("b", { text: model.name }), el("div", {}, labels)),
          el("td", {}, versions),
          el("td", { class: "num", id: "rate-" + model.name, "data-value": rate === null ? "" : rate, text: fmt(rate) }),
          el("td", { class: "num", id: "errors-" + model.name, text: m && m.rate ? fmt(errorShare, 1) + " %" : fmt(m ? m.errors : null) }),
          el("td", { class: "num", text: ms(m ? m.p50 : null) }),
          el("td", { class: "num", text: ms(m ? m.p90 : null) }),
          el("td", { class: "num", text: ms(m ? m.p99 : null) }),
          el("td", { class: "err", text: model.last_error }),
          el("td", { class: "num" }, admin ? modelActions(model) : null),
        );
      }),
    );
  }

  function modelActions(model) {
    const loaded = model.available.length > 0 && !model.unloaded;
    const action = loaded ? "unload" : "load";
    const key = action + "\u0000" + model.name;
    const button = el("button", { "data-action": action, "data-model": model.name });
    armButton(button, key, loaded ? "Unload" : "Load", loaded ? "Confirm unload?" : "Confirm load?");
    return button;
  }

  // A button that acts on its second click within a few seconds (no blocking confirm() dialogs).
  function armButton(button, key, label, confirmLabel) {
    const waiting = S.pending && S.pending.key === key && S.pending.until > Date.now();
    button.textContent = S.busy.has(key) ? label + "…" : waiting ? confirmLabel : label;
    button.disabled = S.busy.has(key);
    button.classList.toggle("confirm", Boolean(waiting));
    button.onclick = () => {
      if (S.pending && S.pending.key === key && S.pending.until > Date.now()) {
        S.pending = null;
        act(key);
      } else {
        S.pending = { key, until: Date.now() + CONFIRM_MS };
      }
      armButton(button, key, label, confirmLabel);
    };
  }

  async function act(key) {
    const [action, name] = key.split("\u0000");
    const url =
      action === "reload" ? "/dashboard/api/reload" : `/v2/repository/models/${encodeURIComponent(name)}/${action}`;
    S.busy.add(key);
    notice(action === "reload" ? "Reloading the model config…" : `${action === "load" ? "Loading" : "Unloading"} ${name}…`);
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { ...authHeaders(), "content-type": "application/json" },
        body: "{}",
      });
      if (response.ok) notice(action === "reload" ? "Model config reloaded." : `${name}: ${action}ed.`);
      else notice(`${action} ${name || ""} failed: ${await errorText(response)}`, true);
    } catch (err) {
      notice(`${action} failed: ${err.message || err}`, true);
    } finally {
      S.busy.delete(key);
    }
  }

  function renderModelCharts(doc, hasMetrics) {
    const container = $("model-charts");
    if (!hasMetrics && S.series.size === 0) {
      container.replaceChildren(el("div", { class: "empty", text: "No metrics: /metrics is off or not reachable." }));
      return;
    }
    container.querySelector(".empty")?.remove();
    for (const model of doc.models) {
      const versions = model.available.length ? "serving v" + model.available.join(", v") : "not serving";
      const node = card(container, "model\u0000" + model.name, model.name);
      node.querySelector(".title span").textContent = versions;
      chart("traffic\u0000" + model.name, chartHost(node, "traffic"), ["requests/s", "errors/s"], "/s");
      chart("latency\u0000" + model.name, chartHost(node, "latency"), ["p50 ms", "p90 ms", "p99 ms"], "ms");
    }
  }

  function renderBatching(doc, measured) {
    const container = $("batch-charts");
    const batching = doc.batching;
    $("batching-summary").textContent = batching
      ? `per batcher (model version): mean rows per batch and requests waiting${batching.per_model ? "; parameters per version" : ""}`
      : "off (--enable_batching=false)";
    const keys = measured ? [...measured.batchers.keys()] : [];
    if (keys.length === 0 && !container.querySelector(".card")) {
      const text = !batching ? "Batching is off." : measured ? "No batcher has reported yet." : "No metrics: /metrics is off or not reachable.";
      container.replaceChildren(el("div", { class: "empty", text }));
      return;
    }
    container.querySelector(".empty")?.remove();
    for (const key of keys) {
      const b = measured.batchers.get(key);
      const node = card(container, "batch\u0000" + key, `${b.model} v${b.version}`);
      node.querySelector(".title span").textContent = `${fmt(b.batches)} batches/s · ${fmt(b.queue, 0)} waiting`;
      chart("batch\u0000" + key, chartHost(node, "batch"), ["mean batch size", "queue depth"], "");
    }
  }

  function renderInstances(doc) {
    const rows = [];
    for (const model of doc.models) {
      for (const v of model.versions) {
        for (const i of v.instances) rows.push({ model: model.name, version: v.version, ...i });
      }
    }
    rows.sort((a, b) => a.device.localeCompare(b.device) || a.model.localeCompare(b.model) || a.version - b.version || a.index - b.index);
    const out = [];
    let device = null;
    for (const r of rows) {
      if (r.device !== device) {
        device = r.device;
        const here = rows.filter((x) => x.device === device);
        const weights = here.reduce((n, x) => n + (x.weights_bytes || 0), 0);
        const memory = here.reduce((n, x) => n + (x.device_memory_bytes || 0), 0);
        out.push(
          el("tr", { class: "device", "data-device": device },
            el("td", { colSpan: 4, text: `${device} · ${here.length} instance${here.length === 1 ? "" : "s"}` }),
            el("td", { class: "num", text: bytes(weights) }),
            el("td", { class: "num", text: memory ? bytes(memory) : "–" }),
            el("td", { colSpan: 2 })),
        );
      }
      out.push(
        el("tr", {},
          el("td", { class: "muted", text: r.requested_device !== r.device ? `asked ${r.requested_device}` : "" }),
          el("td", { text: r.model }),
          el("td", { class: "num", text: r.version }),
          el("td", { class: "num", text: r.index }),
          el("td", { class: "num", text: bytes(r.weights_bytes) }),
          el("td", { class: "num", text: bytes(r.device_memory_bytes) }),
          el("td", { class: "num", text: r.memory_limit_bytes ? bytes(r.memory_limit_bytes) : "none" }),
          el("td", { class: "num", text: r.calls })),
      );
    }
    if (out.length === 0) out.push(el("tr", {}, el("td", { colSpan: 8, class: "empty", text: "No version is loaded." })));
    fill(document.querySelector("#instances tbody"), out);
  }

  function flagRows(flags) {
    return flags.map((f) =>
      el("tr", {},
        el("td", {}, el("code", { text: "--" + f.name })),
        el("td", {}, el("code", { text: String(f.value) })),
        el("td", { class: "muted", text: f.value === f.default ? "" : `default ${f.default === "" ? "none" : f.default}` })),
    );
  }

  function renderConfig(doc) {
    const config = doc.config;
    const explicit = config.flags.filter((f) => f.explicit);
    fill($("flags").tBodies[0], explicit.length ? flagRows(explicit) : [el("tr", {}, el("td", { class: "muted", text: "none: every flag at its default" }))]);
    const allBody = $("all-flags").tBodies[0];
    if (allBody.childElementCount !== config.flags.length) fill(allBody, flagRows(config.flags));
    fill(
      document.querySelector("#config-models tbody"),
      config.models.map((m) =>
        el("tr", {},
          el("td", { text: m.name }),
          el("td", { text: m.platform }),
          el("td", {}, el("code", { text: m.base_path })),
          el("td", { text: policyText(m.policy) }),
          el("td", { text: Object.entries(m.labels).map(([k, v]) => `${k}=${v}`).join(", ") }),
          el("td", { text: placementText(m.placement) })),
      ),
    );
    $("config-file-path").textContent = config.model_config_file ? "--model_config_file=" + config.model_config_file : "";
    $("config-text").textContent = config.model_config_file ? config.model_config_text : "(one model from --model_name and --model_base_path)";
    const params = doc.batching ? Object.entries(doc.batching.parameters) : [];
    fill(
      $("batching").tBodies[0],
      params.length
        ? params.map(([k, v]) => el("tr", {}, el("td", {}, el("code", { text: k })), el("td", { class: "num", text: Array.isArray(v) ? v.join(", ") || "–" : String(v) })))
        : [el("tr", {}, el("td", { class: "muted", text: "--enable_batching is off" }))],
    );
  }

  function policyText(p) {
    if (p.kind === "latest") return `latest ${p.num_versions}`;
    if (p.kind === "specific") return `specific ${p.versions.join(", ")}`;
    return p.kind;
  }

  function placementText(p) {
    const parts = [];
    if (p.devices.length) parts.push(p.devices.join(", "));
    if (p.instances) parts.push(`${p.instances} instance${p.instances === 1 ? "" : "s"}`);
    if (p.memory_limit_bytes) parts.push(`cap ${bytes(p.memory_limit_bytes)}`);
    return parts.join(" · ") || "default";
  }

  // ---- start ----------------------------------------------------------------------------------

  $("token-box").addEventListener("submit", (event) => {
    event.preventDefault();
    S.token = $("token-input").value.trim();
    $("token-input").value = "";
    if (S.token) sessionStorage.setItem(TOKEN_KEY, S.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token-error").textContent = "checking…";
  });
  $("forget-token").addEventListener("click", () => {
    S.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
  });
  window.addEventListener("resize", () => {
    for (const plot of S.charts.values()) {
      const host = plot.root.parentElement;
      if (host) plot.setSize({ width: Math.max(host.clientWidth, 280), height: 180 });
    }
  });
  poll();
})();
