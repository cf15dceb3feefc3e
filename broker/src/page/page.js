// Warren's page: an overview of the broker, each queue's messages, and the frame
// trace as a sequence diagram. Plain JavaScript, no library, no network but the
// broker's own /api/warren endpoints (or none at all in a trace file).
//
// Every name, body and header comes from the broker's users: it is only ever put
// into the page as text (textContent, createTextNode, attribute values), never as
// HTML, so a queue called "<script>" is shown, not run.
"use strict";

(function () {
  const started = performance.now();
  const config = JSON.parse(document.getElementById("warren-config").textContent);
  const ROW = 24; // px per trace row; fixed, so the list can be virtualised
  const LANE = 150; // px between lifelines
  const GUTTER = 110; // px left of the broker's lifeline (seq, channel)
  const POLL_MS = 1000;

  const state = {
    snapshot: null,
    snapshotText: "",
    trace: [], // every entry, in seq order
    lastSeq: 0,
    filtered: [],
    lanes: [], // connection ids with a lifeline, in order
    auth: config.auth || sessionStorage.getItem("warren-auth") || null,
    live: config.mode === "live",
    timer: null,
    tab: "overview",
    renderQueued: false,
  };

  // ---- small DOM helpers: text only --------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "style") e.style.cssText = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) append(e, c);
    return e;
  }

  function append(parent, c) {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) c.forEach((x) => append(parent, x));
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) append(e, c);
    return e;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    for (const c of children) append(node, c);
  }

  function cut(s, n) {
    return s.length > n ? s.slice(0, n) + "…" : s;
  }

  // ---- bodies ----------------------------------------------------------------

  function base64Bytes(b64) {
    try {
      const bin = atob(b64);
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out;
    } catch (e) {
      return new Uint8Array();
    }
  }

  // A body as text when it is text, else as hex; cut to `limit` characters.
  function bodyText(msg, limit) {
    const body = msg.body == null ? "" : String(msg.body);
    if (msg.body_encoding === "base64") {
      const bytes = base64Bytes(body);
      const shown = bytes.subarray(0, Math.ceil(limit / 2));
      let hex = "0x";
      for (const b of shown) hex += b.toString(16).padStart(2, "0");
      const more = bytes.length - shown.length;
      return more > 0 ? `${hex}… (${bytes.length} bytes)` : hex;
    }
    if (body.length > limit) return `${body.slice(0, limit)}… (${body.length} chars)`;
    return body;
  }

  // ---- API ------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = {};
    if (state.auth) headers.Authorization = state.auth;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (res.status === 401) {
      showLogin("Login failed");
      throw new Error("not authorised");
    }
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const reason = data && (data.reason || data.error);
      throw new Error(`${res.status} ${reason || res.statusText}`);
    }
    return data;
  }

  function act(label, method, path, body) {
    setStatus(`${label}…`);
    return api(method, path, body)
      .then(() => {
        setStatus(`${label}: done`);
        return poll();
      })
      .catch((e) => setStatus(`${label}: ${e.message}`, true));
  }

  function setStatus(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = bad ? "error" : "muted";
  }

  function showLogin(message) {
    state.auth = null;
    sessionStorage.removeItem("warren-auth");
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
    stopPolling();
  }

  function basic(user, password) {
    // btoa takes Latin-1: encode the UTF-8 bytes of the pair first.
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return "Basic " + btoa(bin);
  }

  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    state.auth = basic(f.user.value, f.password.value);
    sessionStorage.setItem("warren-auth", state.auth);
    document.getElementById("login").hidden = true;
    startPolling();
  });

  async function poll() {
    try {
      const [snapshot, trace] = await Promise.all([
        api("GET", "/api/warren/snapshot"),
        api("GET", `/api/warren/trace?since=${state.lastSeq}`),
      ]);
      accept(snapshot, trace);
      setStatus(`live · ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      if (e.message !== "not authorised") setStatus(`offline: ${e.message}`, true);
    }
  }

  function startPolling() {
    stopPolling();
    poll();
    state.timer = setInterval(() => {
      if (!document.hidden) poll();
    }, POLL_MS);
  }

  function stopPolling() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  // Takes a snapshot and trace entries (all, or the new ones) and re-renders what
  // changed: an unchanged snapshot leaves the DOM alone.
  function accept(snapshot, trace) {
    // The clock moves on every poll; the rest of the page is redrawn only when
    // something else changed.
    const text = JSON.stringify(Object.assign({}, snapshot, { clock: null }));
    const snapshotChanged = text !== state.snapshotText;
    state.snapshot = snapshot;
    state.snapshotText = text;
    renderClock();
    let traceChanged = false;
    for (const e of trace || []) {
      // The server may send what we have already (it may ignore `since`).
      if (e.seq > state.lastSeq) {
        state.trace.push(e);
        state.lastSeq = e.seq;
        traceChanged = true;
      }
    }
    if (snapshotChanged) renderSnapshot();
    if (traceChanged || snapshotChanged) renderTraceData();
  }

  // ---- tabs -------------------------------------------------------------------

  function route() {
    const hash = decodeURIComponent(location.hash.slice(1));
    const tab = hash.split("/")[0] || "overview";
    state.tab = ["overview", "queue", "trace"].includes(tab) ? tab : "overview";
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== state.tab;
    for (const a of document.querySelectorAll("#tabs a"))
      a.classList.toggle("active", a.dataset.tab === state.tab);
    if (state.tab === "queue") renderQueue();
    if (state.tab === "trace") renderRows(true);
  }
  window.addEventListener("hashchange", route);

  function queueHash(q) {
    return "#queue/" + encodeURIComponent(q.vhost) + "/" + encodeURIComponent(q.name);
  }

  // ---- overview ---------------------------------------------------------------

  function renderSnapshot() {
    renderOverview();
    if (state.tab === "queue") renderQueue();
  }

  function renderClock() {
    const clock = (state.snapshot && state.snapshot.clock) || {};
    const text = clock.virtual
      ? `virtual clock: ${fmtMs(clock.now_ms || 0)}`
      : `real clock: ${fmtMs(clock.now_ms || 0)}`;
    document.getElementById("clock").textContent = text;
    const actions = document.getElementById("clock-actions");
    if (!state.live || !clock.virtual) {
      actions.replaceChildren();
      return;
    }
    if (actions.childElementCount) return; // keep what the user is typing
    const input = el("input", { type: "number", min: "0", value: "1000", title: "milliseconds" });
    replace(
      actions,
      input,
      el(
        "button",
        {
          onclick: () =>
            act("advance the clock", "POST", "/api/warren/clock/advance", { ms: Number(input.value) }),
        },
        "advance ms"
      )
    );
  }

  function fmtMs(ms) {
    if (ms < 1000) return `${ms} ms`;
    const s = ms / 1000;
    return s < 120 ? `${s.toFixed(3)} s` : `${(s / 60).toFixed(1)} min`;
  }

  // The overview's data, redrawn on change, above the fault form, drawn once so
  // that what the user types in it survives the refreshes.
  const overviewData = el("div", { id: "overview-data" });
  replace(document.getElementById("overview"), overviewData, state.live ? faultForm() : null);

  function renderOverview() {
    const s = state.snapshot || {};
    const root = overviewData;
    const queues = s.queues || [];
    replace(
      root,
      el("h2", null, "Virtual hosts"),
      el("div", null, (s.vhosts || []).map((v) => el("span", { class: "chip" }, v))),
      el("h2", null, `Queues (${queues.length})`),
      queuesTable(queues),
      el("h2", null, "Exchanges and bindings"),
      bindingGraph(s.exchanges || [], s.bindings || [], queues),
      el("h2", null, `Connections (${(s.connections || []).length})`),
      connectionsTable(s.connections || []),
      el("h2", null, `Faults (${(s.faults || []).length})`),
      faultsTable(s.faults || [])
    );
  }

  function flags(q) {
    return [
      q.durable ? el("span", { class: "chip", title: "durable" }, "D") : null,
      q.auto_delete ? el("span", { class: "chip", title: "auto-delete" }, "AD") : null,
      q.exclusive ? el("span", { class: "chip", title: "exclusive" }, "X") : null,
    ];
  }

  function queuesTable(queues) {
    if (!queues.length) return el("p", { class: "muted" }, "No queue.");
    const rows = queues.map((q) =>
      el(
        "tr",
        { "data-queue": q.name },
        el("td", null, q.vhost),
        el("td", null, el("a", { class: "qlink", href: queueHash(q) }, q.name)),
        el("td", null, q.type || "classic", " ", flags(q)),
        el("td", { class: "num ready" }, q.messages_ready ?? (q.ready || []).length),
        el("td", { class: "num unacked" }, q.messages_unacknowledged ?? (q.unacked || []).length),
        el("td", { class: "num consumers" }, q.consumers ?? (q.consumer_details || []).length),
        el(
          "td",
          null,
          (q.ready || [])
            .slice(0, 3)
            .map((m) => el("span", { class: "body short chip" }, bodyText(m, 60)))
        )
      )
    );
    return el(
      "table",
      { id: "queues" },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          el("th", null, "vhost"),
          el("th", null, "name"),
          el("th", null, "type"),
          el("th", { class: "num" }, "ready"),
          el("th", { class: "num" }, "unacked"),
          el("th", { class: "num" }, "consumers"),
          el("th", null, "first bodies")
        )
      ),
      el("tbody", null, rows)
    );
  }

  // Exchanges that have bindings on the left, what they bind to on the right.
  function bindingGraph(exchanges, bindings, queues) {
    const shown = bindings.filter((b) => b.source !== "");
    if (!shown.length) {
      const own = exchanges.filter((x) => x.name && !x.name.startsWith("amq."));
      return el(
        "p",
        { class: "muted" },
        own.length
          ? ["Exchanges without bindings: ", own.map((x) => el("span", { class: "chip" }, `${x.name} (${x.type})`))]
          : "No binding but the default exchange's."
      );
    }
    const key = (vhost, name) => `${vhost}\u0000${name}`;
    const kinds = new Map(exchanges.map((x) => [key(x.vhost, x.name), x.type]));
    const sources = [...new Map(shown.map((b) => [key(b.vhost, b.source), b])).values()];
    const dests = [
      ...new Map(shown.map((b) => [key(b.vhost, b.destination) + b.destination_type, b])).values(),
    ];
    const H = 30;
    const W = 860;
    const height = Math.max(sources.length, dests.length) * H + 10;
    const g = svg("svg", { class: "graph", width: W, height, viewBox: `0 0 ${W} ${height}` });
    const srcY = new Map();
    sources.forEach((b, i) => {
      const y = 5 + i * H;
      srcY.set(key(b.vhost, b.source), y + 11);
      const label = `${cut(b.source, 26)} (${kinds.get(key(b.vhost, b.source)) || "?"})`;
      g.appendChild(
        svg("g", { class: "node exchange" }, svg("rect", { x: 0, y, width: 230, height: 22, rx: 4 }),
          svg("text", { x: 8, y: y + 15 }, label), svg("title", {}, b.source))
      );
    });
    const dstY = new Map();
    dests.forEach((b, i) => {
      const y = 5 + i * H;
      dstY.set(key(b.vhost, b.destination) + b.destination_type, y + 11);
      const isQueue = b.destination_type === "queue";
      g.appendChild(
        svg("g", { class: "node " + (isQueue ? "queue" : "exchange") },
          svg("rect", { x: W - 250, y, width: 250, height: 22, rx: isQueue ? 11 : 4 }),
          svg("text", { x: W - 242, y: y + 15 }, (isQueue ? "" : "exchange ") + cut(b.destination, 30)),
          svg("title", {}, b.destination))
      );
    });
    for (const b of shown) {
      const y1 = srcY.get(key(b.vhost, b.source));
      const y2 = dstY.get(key(b.vhost, b.destination) + b.destination_type);
      g.appendChild(svg("path", { class: "edge", d: `M230 ${y1} C 430 ${y1}, 410 ${y2}, ${W - 250} ${y2}` }));
      if (b.routing_key)
        g.appendChild(svg("text", { class: "edge-label", x: 430, y: (y1 + y2) / 2 - 3 }, cut(b.routing_key, 30)));
    }
    void queues;
    return g;
  }

  function clientName(c) {
    const p = c.client_properties || {};
    if (p.connection_name || p.product) return p.connection_name || p.product;
    // A snapshot may not carry client properties (a trace file's does not): the
    // trace's connection.start-ok does.
    const start = state.trace.find((e) => e.connection === c.id && e.method === "connection.start-ok");
    const f = (start && start.fields) || {};
    return f.connection_name || f.product || "";
  }

  function connectionsTable(conns) {
    if (!conns.length) return el("p", { class: "muted" }, "No connection.");
    return el(
      "table",
      { id: "connections" },
      el(
        "thead",
        null,
        el("tr", null, ["id", "client", "peer", "user", "vhost", "channels", ""].map((h) => el("th", null, h)))
      ),
      el(
        "tbody",
        null,
        conns.map((c) =>
          el(
            "tr",
            null,
            el("td", null, c.id),
            el("td", null, clientName(c)),
            el("td", null, c.peer || c.name || ""),
            el("td", null, c.user || ""),
            el("td", null, c.vhost || ""),
            el("td", null, (c.channels || []).map((n) => el("span", { class: "chip" }, n))),
            el(
              "td",
              null,
              state.live
                ? el(
                    "button",
                    {
                      onclick: () =>
                        act(`close connection ${c.id}`, "POST", `/api/warren/connections/${c.id}/close`, {
                          code: 320,
                          text: "closed from Warren's page",
                        }),
                    },
                    "close"
                  )
                : null
            )
          )
        )
      )
    );
  }

  function faultText(f) {
    const what = { publish_to: "publish to", publish_routed_to: "publish routed to", any_publish: "any publish", ack: "ack" }[f.on] || f.on;
    const target = f.on === "publish_to" ? ` '${f.exchange}'` : f.on === "publish_routed_to" ? ` '${f.queue}'` : "";
    const scope = [
      f.connection != null ? `connection ${f.connection}` : null,
      f.channel != null ? `channel ${f.channel}` : null,
      f.nth != null ? `nth ${f.nth}` : null,
      f.times != null ? `${f.times} times` : null,
    ].filter(Boolean);
    const a = f.action || {};
    const action = a.code != null ? `${a.type} ${a.code} ${a.text || ""}` : a.type;
    return `on ${what}${target}${scope.length ? " (" + scope.join(", ") + ")" : ""}: ${action}`;
  }

  function faultsTable(faults) {
    if (!faults.length) return el("p", { class: "muted" }, "No fault armed.");
    return el(
      "table",
      { id: "faults" },
      el("thead", null, el("tr", null, ["id", "rule", "fired", ""].map((h) => el("th", null, h)))),
      el(
        "tbody",
        null,
        faults.map((f) =>
          el(
            "tr",
            null,
            el("td", null, f.id),
            el("td", null, faultText(f)),
            el("td", { class: "num" }, f.fired ?? 0),
            el(
              "td",
              null,
              state.live
                ? el("button", { onclick: () => act(`remove fault ${f.id}`, "DELETE", `/api/warren/faults/${f.id}`) }, "remove")
                : null
            )
          )
        )
      )
    );
  }

  function faultForm() {
    const on = el(
      "select",
      { name: "on" },
      ["any_publish", "publish_to", "publish_routed_to", "ack"].map((o) => el("option", { value: o }, o))
    );
    const target = el("input", { name: "target", placeholder: "exchange or queue" });
    const channel = el("input", { name: "channel", type: "number", min: "1", placeholder: "channel" });
    const connection = el("input", { name: "connection", type: "number", min: "1", placeholder: "connection" });
    const times = el("input", { name: "times", type: "number", min: "1", placeholder: "times" });
    const action = el(
      "select",
      { name: "action" },
      ["nack_confirm", "withhold_confirm", "close_channel", "close_connection"].map((o) => el("option", { value: o }, o))
    );
    const code = el("input", { name: "code", type: "number", placeholder: "code", value: "406" });
    const text = el("input", { name: "text", placeholder: "text" });
    const form = el(
      "form",
      { class: "inline panel", id: "fault-form" },
      "Inject a fault:", on, target, channel, connection, times, action, code, text,
      el("button", { type: "submit" }, "inject")
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const fault = { on: on.value };
      if (on.value === "publish_to") fault.exchange = target.value;
      if (on.value === "publish_routed_to") fault.queue = target.value;
      if (channel.value) fault.channel = Number(channel.value);
      if (connection.value) fault.connection = Number(connection.value);
      if (times.value) fault.times = Number(times.value);
      fault.action = { type: action.value };
      if (action.value.startsWith("close_")) {
        fault.action.code = Number(code.value);
        fault.action.text = text.value;
      }
      act("inject a fault", "POST", "/api/warren/faults", fault);
    });
    return form;
  }

  // ---- one queue's messages ---------------------------------------------------------

  function selectedQueue() {
    const parts = location.hash.slice(1).split("/");
    if (parts[0] !== "queue" || parts.length < 3) return null;
    const vhost = decodeURIComponent(parts[1]);
    const name = decodeURIComponent(parts.slice(2).join("/"));
    return { vhost, name };
  }

  function renderQueue() {
    const root = document.getElementById("queue");
    const queues = (state.snapshot && state.snapshot.queues) || [];
    const want = selectedQueue();
    const q = want && queues.find((x) => x.vhost === want.vhost && x.name === want.name);
    const picker = el(
      "select",
      {
        onchange: (ev) => {
          location.hash = ev.target.value;
        },
      },
      el("option", { value: "#queue" }, "choose a queue"),
      queues.map((x) => el("option", { value: queueHash(x), selected: q === x }, `${x.vhost} ${x.name}`))
    );
    if (!q) {
      replace(root, el("h2", null, "Messages"), picker, want ? el("p", { class: "muted" }, "No such queue now.") : null);
      return;
    }
    replace(
      root,
      el("h2", null, "Messages of ", el("span", { id: "queue-name" }, q.name), " ", flags(q)),
      picker,
      el(
        "p",
        { class: "muted" },
        `${q.messages_ready ?? (q.ready || []).length} ready, ${q.messages_unacknowledged ?? (q.unacked || []).length} unacked, ${q.consumers ?? 0} consumers`
      ),
      Object.keys(q.arguments || {}).length ? el("div", { class: "panel" }, "arguments: ", headerValue(q.arguments)) : null,
      el("h2", null, "Consumers"),
      (q.consumer_details || []).length
        ? el(
            "table",
            null,
            el("thead", null, el("tr", null, ["tag", "connection", "channel", "ack", "prefetch", "unacked"].map((h) => el("th", null, h)))),
            el(
              "tbody",
              null,
              q.consumer_details.map((c) =>
                el(
                  "tr",
                  null,
                  el("td", null, c.consumer_tag),
                  el("td", null, c.connection),
                  el("td", null, c.channel),
                  el("td", null, c.ack_required ? "manual" : "auto"),
                  el("td", null, c.prefetch_count ?? ""),
                  el("td", null, c.unacked ?? "")
                )
              )
            )
          )
        : el("p", { class: "muted" }, "None."),
      el("h2", null, "Unacked deliveries"),
      (q.unacked || []).length ? (q.unacked || []).map((m) => message(m, true)) : el("p", { class: "muted" }, "None."),
      el("h2", null, "Ready, in delivery order"),
      (q.ready || []).length ? (q.ready || []).map((m, i) => message(m, false, i + 1)) : el("p", { class: "muted" }, "None.")
    );
  }

  function message(m, unacked, position) {
    const props = Object.entries(m.properties || {}).filter(([k]) => k !== "headers");
    const headers = (m.properties && m.properties.headers) || {};
    const meta = unacked
      ? `delivery tag ${m.delivery_tag} on connection ${m.connection} channel ${m.channel}` +
        (m.consumer_tag ? ` (consumer ${m.consumer_tag})` : " (basic.get)")
      : `#${position}`;
    return el(
      "div",
      { class: "msg" + (unacked ? " unacked" : " ready") },
      el(
        "div",
        { class: "meta" },
        meta,
        ` · from exchange '${m.exchange ?? ""}' with key '${m.routing_key ?? ""}'`,
        // An unacked delivery's flag says how it will come back if requeued,
        // not how it went out: only a ready message's is shown.
        !unacked && m.redelivered ? el("span", { class: "chip warn" }, "redelivered") : null
      ),
      el("div", { class: "body" }, bodyText(m, 2000)),
      props.length ? el("div", { class: "kv" }, props.map(([k, v]) => [el("span", null, k), el("span", null, typeof v === "object" ? JSON.stringify(v) : String(v))])) : null,
      Object.keys(headers).length
        ? el(
            "div",
            { class: "kv" },
            Object.entries(headers).map(([k, v]) => [
              el("span", null, k),
              k === "x-death" && Array.isArray(v) ? xDeath(v) : headerValue(v),
            ])
          )
        : null
    );
  }

  function headerValue(v) {
    return el("span", { class: "body" }, typeof v === "object" ? JSON.stringify(v) : String(v));
  }

  // x-death: one row per (queue, reason), as RabbitMQ keeps it.
  function xDeath(list) {
    return el(
      "table",
      { class: "xdeath" },
      el("thead", null, el("tr", null, ["queue", "reason", "count", "exchange", "routing keys", "time"].map((h) => el("th", null, h)))),
      el(
        "tbody",
        null,
        list.map((d) =>
          el(
            "tr",
            null,
            el("td", null, d.queue ?? ""),
            el("td", null, d.reason ?? ""),
            el("td", null, d.count ?? ""),
            el("td", null, d.exchange ?? ""),
            el("td", null, Array.isArray(d["routing-keys"]) ? d["routing-keys"].join(", ") : ""),
            el("td", null, d.time != null ? new Date(Number(d.time) * 1000).toISOString() : "")
          )
        )
      )
    );
  }

  // ---- the trace as a sequence diagram ----------------------------------------------

  const traceRoot = document.getElementById("trace");
  const filters = {
    connection: el("select", { id: "f-connection" }),
    channel: el("input", { id: "f-channel", type: "number", min: "0", placeholder: "any" }),
    queue: el("select", { id: "f-queue" }),
    text: el("input", { id: "f-text", placeholder: "method or field" }),
    heartbeats: el("input", { id: "f-heartbeats", type: "checkbox" }),
  };
  const head = el("div", { id: "trace-head" });
  const scroller = el("div", { id: "trace-scroll" });
  const sizer = el("div", { id: "trace-sizer" });
  const rowsBox = el("div", { id: "trace-rows" });
  const count = el("span", { id: "trace-count", class: "muted" });
  // Live, the newest frames stay in view; a trace file opens at its start.
  const follow = el("input", { id: "f-follow", type: "checkbox", checked: state.live });
  scroller.appendChild(sizer);
  replace(
    traceRoot,
    el(
      "div",
      { id: "trace-filters" },
      el("label", null, "connection ", filters.connection),
      el("label", null, "channel ", filters.channel),
      el("label", null, "queue ", filters.queue),
      el("label", null, "find ", filters.text),
      el("label", null, filters.heartbeats, " heartbeats"),
      el("label", null, follow, " follow"),
      state.live ? el("button", { onclick: () => act("trace on", "POST", "/api/warren/trace", { on: true }) }, "trace on") : null,
      count
    ),
    head,
    scroller
  );
  for (const f of Object.values(filters)) {
    f.addEventListener("input", () => {
      applyFilters();
      renderRows(true);
    });
  }
  scroller.addEventListener("scroll", () => {
    head.scrollLeft = scroller.scrollLeft;
    follow.checked = scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - ROW;
    queueRender();
  });
  window.addEventListener("resize", () => queueRender());

  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => {
      state.renderQueued = false;
      renderRows(false);
    });
  }

  function connName(id) {
    const c = ((state.snapshot && state.snapshot.connections) || []).find((x) => x.id === id);
    if (c && clientName(c)) return clientName(c);
    const start = state.trace.find((e) => e.connection === id && e.method === "connection.start-ok");
    const f = (start && start.fields) || {};
    return f.connection_name || f.product || (c ? c.peer || "" : "closed");
  }

  function setOptions(select, options) {
    const value = select.value;
    const now = JSON.stringify(options);
    if (select.dataset.options === now) return;
    select.dataset.options = now;
    replace(select, options.map(([v, label]) => el("option", { value: v }, label)));
    if (options.some(([v]) => v === value)) select.value = value;
  }

  function renderTraceData() {
    const ids = [...new Set(state.trace.map((e) => e.connection))].sort((a, b) => a - b);
    setOptions(filters.connection, [["", "all"], ...ids.map((id) => [String(id), `${id} ${cut(connName(id), 30)}`])]);
    const queues = new Set(((state.snapshot && state.snapshot.queues) || []).map((q) => q.name));
    for (const e of state.trace) if (e.fields && typeof e.fields.queue === "string" && e.fields.queue) queues.add(e.fields.queue);
    setOptions(filters.queue, [["", "any"], ...[...queues].sort().map((q) => [q, cut(q, 40)])]);
    applyFilters();
    renderRows(true);
  }

  // What concerns one queue: its declares, binds, consumes and gets; publishes
  // that reach it (by the default exchange or a binding); deliveries to its
  // consumers and the acks that settle them; the content frames that follow a
  // kept publish or delivery.
  function queueMatcher(queue) {
    const bindings = ((state.snapshot && state.snapshot.bindings) || []).filter(
      (b) => b.destination === queue && b.destination_type === "queue"
    );
    const tags = new Set();
    const delivered = new Set();
    const pendingConsume = new Map();
    const carrying = new Map(); // connection/channel/direction -> content follows a kept method
    return (e) => {
      const f = e.fields || {};
      const lane = `${e.connection}/${e.channel}/${e.direction}`;
      const chan = `${e.connection}/${e.channel}`;
      if (e.method === "content-header" || e.method === "content-body") return carrying.get(lane) === true;
      let keep = false;
      switch (e.method) {
        case "basic.publish":
          keep =
            (f.exchange === "" && f.routing_key === queue) ||
            bindings.some((b) => b.source === f.exchange && (b.routing_key === f.routing_key || b.routing_key === "" || /[*#]/.test(b.routing_key)));
          break;
        case "basic.consume":
          keep = f.queue === queue;
          if (keep) {
            if (f.consumer_tag) tags.add(`${e.connection}/${f.consumer_tag}`);
            pendingConsume.set(chan, true);
          }
          break;
        case "basic.consume-ok":
          keep = pendingConsume.get(chan) === true;
          if (keep) tags.add(`${e.connection}/${f.consumer_tag}`);
          pendingConsume.delete(chan);
          break;
        case "basic.deliver":
        case "basic.cancel":
        case "basic.cancel-ok":
          keep = tags.has(`${e.connection}/${f.consumer_tag}`);
          if (keep && e.method === "basic.deliver") delivered.add(`${chan}/${f.delivery_tag}`);
          break;
        case "basic.get":
          keep = f.queue === queue;
          pendingConsume.set(chan + "/get", keep);
          break;
        case "basic.get-ok":
        case "basic.get-empty":
          keep = pendingConsume.get(chan + "/get") === true;
          if (keep && f.delivery_tag != null) delivered.add(`${chan}/${f.delivery_tag}`);
          break;
        case "basic.ack":
        case "basic.nack":
        case "basic.reject":
          if (e.direction === "in") {
            keep =
              delivered.has(`${chan}/${f.delivery_tag}`) ||
              (f.multiple && [...delivered].some((d) => d.startsWith(chan + "/") && Number(d.split("/")[2]) <= f.delivery_tag));
          }
          break;
        default:
          keep = f.queue === queue;
      }
      carrying.set(lane, keep);
      return keep;
    };
  }

  function applyFilters() {
    const conn = filters.connection.value === "" ? null : Number(filters.connection.value);
    const channel = filters.channel.value === "" ? null : Number(filters.channel.value);
    const text = filters.text.value.trim().toLowerCase();
    const heartbeats = filters.heartbeats.checked;
    const byQueue = filters.queue.value ? queueMatcher(filters.queue.value) : null;
    const out = [];
    for (const e of state.trace) {
      // The queue matcher follows state through every entry, so it sees all of them.
      if (byQueue && !byQueue(e)) continue;
      if (conn !== null && e.connection !== conn) continue;
      if (channel !== null && e.channel !== channel) continue;
      if (!heartbeats && e.method === "heartbeat") continue;
      if (text && !(e.summary || e.method).toLowerCase().includes(text)) continue;
      out.push(e);
    }
    state.filtered = out;
    const lanes = [...new Set(out.map((e) => e.connection))].sort((a, b) => a - b);
    if (JSON.stringify(lanes) !== JSON.stringify(state.lanes)) {
      state.lanes = lanes;
      drawLanes();
    }
    count.textContent = `${out.length} of ${state.trace.length} frames`;
  }

  function laneX(i) {
    // Lane 0 is the broker; connections follow to its right.
    return GUTTER + i * LANE;
  }

  function drawLanes() {
    const width = laneX(state.lanes.length) + 400;
    sizer.style.width = `${width}px`;
    head.style.width = "100%";
    const names = [el("div", { class: "lane-name", style: `left:${laneX(0)}px` }, el("b", null, "broker"))];
    const lines = [el("div", { class: "lifeline broker", style: `left:${laneX(0)}px` })];
    state.lanes.forEach((id, i) => {
      const x = laneX(i + 1);
      names.push(
        el("div", { class: "lane-name", style: `left:${x}px; max-width:${LANE - 6}px`, title: connName(id), "data-connection": id },
          el("b", null, `conn ${id}`), el("br"), cut(connName(id), 24))
      );
      lines.push(el("div", { class: "lifeline", style: `left:${x}px` }));
    });
    // Wide enough that the names scroll with the rows.
    names.push(el("div", { style: `position:absolute; left:${width}px; width:1px; height:1px` }));
    replace(head, names);
    replace(sizer, lines, rowsBox);
  }

  function isBad(e) {
    const f = e.fields || {};
    return e.method === "basic.nack" || e.method === "basic.return" || (f.reply_code != null && f.reply_code >= 300);
  }

  function fieldsText(e) {
    // The server's summary keeps the fields in the frame's order (JSON objects
    // may not): show it less the method it starts with.
    if (typeof e.summary === "string" && e.summary.startsWith(e.method)) return e.summary.slice(e.method.length + 1);
    const f = e.fields || {};
    const parts = [];
    for (const [k, v] of Object.entries(f)) {
      if (k === "arguments" || k === "headers") continue;
      parts.push(`${k}=${typeof v === "string" ? JSON.stringify(cut(v, 80)) : v}`);
    }
    return parts.join(" ");
  }

  function row(e, index) {
    const lane = state.lanes.indexOf(e.connection) + 1;
    const xc = laneX(lane);
    const xb = laneX(0);
    const into = e.direction === "in"; // client -> broker: the arrow points left
    const left = Math.min(xc, xb);
    const content = e.method === "content-header" || e.method === "content-body" || e.method === "heartbeat";
    const cls = ["row", content ? "content" : "", e.faults && e.faults.length ? "faulted" : ""].join(" ");
    const arrowCls = ["arrow", into ? "in left" : "out right", isBad(e) ? "bad" : ""].join(" ");
    const label = el(
      "span",
      { class: "label", style: `left:${left + 8}px; max-width:${Math.max(LANE * 2, sizer.clientWidth - left - 16)}px`, title: e.summary || e.method },
      (e.faults || []).map((m) =>
        el("span", { class: "fault", title: m.detail }, `⚡ fault fired: ${m.action}${m.detail ? " " + m.detail : ""}`)
      ),
      el("span", { class: "method" }, e.method),
      " ",
      el("span", { class: "fields" }, fieldsText(e))
    );
    return el(
      "div",
      {
        class: cls,
        style: `top:${index * ROW}px; position:absolute; left:0; right:0`,
        "data-seq": e.seq,
        "data-method": e.method,
        "data-direction": e.direction,
        "data-connection": e.connection,
        "data-channel": e.channel,
      },
      el("span", { class: "seq" }, e.seq),
      el("span", { class: "ch" }, `ch${e.channel}`),
      el("div", { class: arrowCls, style: `left:${left}px; width:${Math.abs(xc - xb)}px` }),
      label
    );
  }

  // Only the rows in view (and a screen's worth around them) are in the DOM, so a
  // trace of 100 000 frames costs what 100 do.
  function renderRows(dataChanged) {
    if (state.tab !== "trace" && !dataChanged) return;
    const n = state.filtered.length;
    sizer.style.height = `${n * ROW}px`;
    if (dataChanged && follow.checked) scroller.scrollTop = n * ROW;
    const view = scroller.clientHeight || 800;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 20);
    const last = Math.min(n, Math.ceil((scroller.scrollTop + view) / ROW) + 20);
    if (!dataChanged && rowsBox.dataset.range === `${first}-${last}`) return;
    rowsBox.dataset.range = `${first}-${last}`;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.appendChild(row(state.filtered[i], i));
    rowsBox.replaceChildren(frag);
  }

  // ---- start -------------------------------------------------------------------

  route();
  if (state.live) {
    if (state.auth) startPolling();
    else showLogin();
  } else {
    const holder = document.getElementById("warren-data");
    const data = JSON.parse(holder.textContent);
    // Parsed once; the text (megabytes for a long trace) need not stay in the DOM.
    holder.remove();
    const when = data.generated_ms ? new Date(data.generated_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
    setStatus(`trace file${when ? " written " + when : ""}: the state at its end`);
    accept(data.snapshot || {}, data.trace || []);
  }
  // How long the script took, and how long since the navigation began (the
  // file's download and parsing included): the page's load time.
  document.body.dataset.scriptMs = String(Math.round(performance.now() - started));
  document.body.dataset.loadMs = String(Math.round(performance.now()));
  document.body.dataset.ready = "true";
})();
