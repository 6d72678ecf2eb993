// ztgate security dashboard: polls the admin API every 1.5 s and redraws; plots are inline SVG drawn here.
// No libraries, no inline handlers, no innerHTML with data: every value reaches the page through textContent or
// setAttribute, so the strict CSP (script nonce, no 'unsafe-inline') holds.
(() => {
  "use strict";

  const API = "/.ztgate/admin/api";
  const POLL_MS = 1500;
  const EVENTS_EVERY = 2; // polls between event-list refreshes
  const HISTORY_MAX = 1200; // points kept per session in the browser (30 min at 1.5 s)
  const SIGNALS = ["cadence", "relay", "automation", "network", "sensor"];
  const STATES = ["active", "step_up_required", "restricted", "terminated"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const app = document.getElementById("app");
  const live = document.getElementById("live");
  const history = new Map(); // sid -> [{t, risk, signals}]
  const seeded = new Set();
  let rows = [];
  let eventsStatus = null;
  let recent = [];
  let polls = 0;
  let view = null; // the mounted view: {kind: "list"|"session", update()}

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    return node;
  }

  const fmt = {
    risk: (r) => (r === null || r === undefined ? "\u2013" : r.toFixed(2)),
    ms: (v) => (v === null || v === undefined ? "\u2013" : `${Math.round(v)} ms`),
    state: (s) => String(s || "").replace(/_/g, " "),
    ago(seconds) {
      if (seconds === null || seconds === undefined) return "\u2013";
      if (seconds < 60) return `${Math.round(seconds)} s`;
      if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
      return `${(seconds / 3600).toFixed(1)} h`;
    },
    time(ms) {
      const d = new Date(ms);
      return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    },
  };

  function riskClass(r) {
    if (r === null || r === undefined) return "risk-none";
    if (r >= 0.8) return "risk-high";
    if (r >= 0.5) return "risk-mid";
    return "risk-low";
  }

  function riskBar(r) {
    const bar = el("span", { class: `riskbar ${riskClass(r)}` });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.round((r || 0) * 100)}%`; // CSSOM, not a style attribute: allowed by the CSP
    bar.append(fill);
    return el("span", { class: "risk" }, bar, el("span", { class: "num", text: fmt.risk(r) }));
  }

  function badge(state) {
    return el("span", { class: `badge state-${state}`, text: fmt.state(state) });
  }

  // ------------------------------------------------------------------ API

  async function getJSON(path) {
    const r = await fetch(API + path, { headers: { Accept: "application/json" }, credentials: "same-origin",
                                        cache: "no-store" });
    if (r.status === 401) {
      window.location.assign("/.ztgate/login?next=%2F.ztgate%2Fadmin%2F");
      throw new Error("signed out");
    }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function post(path, body) {
    // X-Ztgate-Admin: the CSRF guard's proof that this page, not a cross-site form, sent the request
    const r = await fetch(API + path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "X-Ztgate-Admin": "1", "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body || {}),
    });
    if (!r.ok) {
      let msg = `HTTP ${r.status}`;
      try { msg = (await r.json()).error_description || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return r.json();
  }

  function remember(sid, t, risk, signals) {
    if (risk === null || risk === undefined) return;
    let h = history.get(sid);
    if (!h) history.set(sid, (h = []));
    const last = h[h.length - 1];
    if (last && t - last.t < 0.5) return;
    h.push({ t, risk, signals });
    if (h.length > HISTORY_MAX) h.splice(0, h.length - HISTORY_MAX);
  }

  async function seedHistory(sid) {
    if (seeded.has(sid)) return;
    seeded.add(sid);
    try {
      const data = await getJSON(`/sessions/${encodeURIComponent(sid)}/history`);
      const h = history.get(sid) || [];
      const first = h.length ? h[0].t : Infinity;
      const older = data.points.filter((p) => p.t < first - 0.5)
        .map((p) => ({ t: p.t, risk: p.risk, signals: p.signals }));
      history.set(sid, older.concat(h).slice(-HISTORY_MAX));
    } catch (e) { /* the session is scored by another process: the browser's own history is what we have */ }
  }

  // ------------------------------------------------------------------ plots

  function plot(points, series, opts) {
    const W = 720, H = opts.height || 170, L = 34, R = 10, T = 10, B = 22;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": opts.label });
    const now = Date.now() / 1000;
    const t0 = points.length ? Math.min(points[0].t, now - 60) : now - 60;
    const x = (t) => L + ((t - t0) / Math.max(1, now - t0)) * (W - L - R);
    const y = (v) => T + (1 - Math.max(0, Math.min(1, v))) * (H - T - B);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end", text: v.toFixed(2) }));
    }
    if (opts.threshold !== undefined) {
      root.append(svg("line", { x1: L, x2: W - R, y1: y(opts.threshold), y2: y(opts.threshold), class: "threshold" }));
    }
    root.append(svg("text", { x: L, y: H - 5, class: "axis", text: `${fmt.ago(now - t0)} ago` }));
    root.append(svg("text", { x: W - R, y: H - 5, class: "axis", "text-anchor": "end", text: "now" }));
    for (const s of series) {
      const pts = points.filter((p) => s.value(p) !== null && s.value(p) !== undefined)
        .map((p) => `${x(p.t).toFixed(1)},${y(s.value(p)).toFixed(1)}`);
      if (!pts.length) continue;
      if (pts.length === 1) {
        const [cx, cy] = pts[0].split(",");
        root.append(svg("circle", { cx, cy, r: 3, class: `dot s-${s.key}` }));
      } else {
        root.append(svg("polyline", { points: pts.join(" "), class: `line s-${s.key}` }));
      }
    }
    if (!points.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle",
                                text: "no scored input yet" }));
    }
    return root;
  }

  function legend(series) {
    return el("div", { class: "legend" },
      series.map((s) => el("span", { class: "key" }, el("span", { class: `swatch s-${s.key}` }), s.label)));
  }

  // ------------------------------------------------------------------ overview

  function listView() {
    const cards = el("section", { class: "cards" });
    const table = el("table", { class: "sessions", id: "sessions" });
    const events = el("ol", { class: "events", id: "events" });
    app.replaceChildren(
      cards,
      el("section", { class: "panel" }, el("h2", { text: "Live sessions" }), table),
      el("section", { class: "panel" }, el("h2", { text: "Recent security events" }), events),
    );

    function update() {
      const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
      for (const r of rows) counts[r.state] = (counts[r.state] || 0) + 1;
      const high = rows.filter((r) => r.state !== "terminated" && (r.risk || 0) >= 0.8).length;
      cards.replaceChildren(
        card("Active", counts.active, "state-active"),
        card("Step-up required", counts.step_up_required, "state-step_up_required"),
        card("Restricted", counts.restricted, "state-restricted"),
        card("Terminated", counts.terminated, "state-terminated"),
        card("High risk (\u2265 0.8)", high, high ? "risk-high" : ""),
        card("Event backlog", eventsStatus ? eventsStatus.backlog : "\u2013", "",
             eventsStatus ? `lag ${eventsStatus.lag_seconds.toFixed(1)} s` : "events off"),
      );
      const head = el("tr", {}, ["User", "Route", "State", "Risk", "Added latency", "Input", "Client", "Age",
        "Idle", "Last decision"].map((h) => el("th", { text: h })));
      const body = rows.map((r) => {
        const link = el("a", { href: `#/session/${encodeURIComponent(r.sid)}`, class: "user", text: r.user });
        return el("tr", { "data-sid": r.sid, class: r.state === "terminated" ? "ended" : "" },
          el("td", {}, link, el("div", { class: "sub", text: r.sid.slice(0, 10) })),
          el("td", { text: r.route }),
          el("td", {}, badge(r.state)),
          el("td", { class: "risk-cell" }, riskBar(r.risk)),
          el("td", { class: "num", text: fmt.ms(r.added_latency_ms) }),
          el("td", { text: r.sources.join(", ") }),
          el("td", {}, r.client_ip || "\u2013", r.country ? el("div", { class: "sub", text: r.country }) : null),
          el("td", { class: "num", text: fmt.ago(r.age_seconds) }),
          el("td", { class: "num", text: fmt.ago(r.idle_seconds) }),
          el("td", { text: r.decision ? `${r.decision.action} \u00b7 ${r.decision.rule_id || ""}` : "\u2013" }),
        );
      });
      table.replaceChildren(el("thead", {}, head), el("tbody", {}, body.length ? body
        : [el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No sessions." }))]));
      events.replaceChildren(...eventItems(recent.slice(0, 15)));
    }
    return { kind: "list", update };
  }

  function card(label, value, cls, sub) {
    return el("div", { class: `card ${cls || ""}` }, el("div", { class: "value", text: value }),
      el("div", { class: "label", text: label }), sub ? el("div", { class: "sub", text: sub }) : null);
  }

  function eventItems(events) {
    if (!events.length) return [el("li", { class: "empty", text: "No security events yet." })];
    return events.map((e) => el("li", { class: `event kind-${e.kind}` },
      el("span", { class: "when", text: fmt.time(e.time_ms) }),
      el("span", { class: `tag ${e.action ? "act-" + e.action : ""}`, text: e.action || e.kind }),
      e.shadow ? el("span", { class: "tag shadow", text: "shadow" }) : null,
      el("span", { class: "msg", text: e.message }),
      e.user ? el("span", { class: "who", text: e.user }) : null));
  }

  // ------------------------------------------------------------------ one session

  function sessionView(sid) {
    const title = el("div", { class: "title" });
    const status = el("div", { class: "notice", role: "status" });
    const stepUp = el("button", { type: "button", id: "step-up", class: "btn warn", text: "Require step-up" });
    const terminate = el("button", { type: "button", id: "terminate", class: "btn danger", text: "Terminate" });
    const riskBox = el("div", { class: "plotbox" });
    const signalBox = el("div", { class: "plotbox" });
    const signalCards = el("div", { class: "signals" });
    const facts = el("dl", { class: "facts" });
    const decisions = el("ol", { class: "events", id: "decisions" });
    let detail = null;
    let sessionEvents = [];

    app.replaceChildren(
      el("nav", {}, el("a", { href: "#/", class: "back", text: "\u2190 All sessions" })),
      el("section", { class: "panel head" }, title, el("div", { class: "actions" }, stepUp, terminate), status),
      el("div", { class: "grid2" },
        el("section", { class: "panel" }, el("h2", { text: "Risk" }), riskBox),
        el("section", { class: "panel" }, el("h2", { text: "Signals" }), signalBox)),
      el("div", { class: "grid2" },
        el("section", { class: "panel" }, el("h2", { text: "Signals now" }), signalCards),
        el("section", { class: "panel" }, el("h2", { text: "Session" }), facts)),
      el("section", { class: "panel" }, el("h2", { text: "Decisions and evidence" }), decisions),
    );

    async function act(button, path, body, done) {
      button.disabled = true;
      status.textContent = "";
      try {
        detail = await post(path, body);
        status.textContent = done;
        status.className = "notice ok";
        await refresh();
      } catch (e) {
        status.textContent = `Failed: ${e.message}`;
        status.className = "notice error";
      } finally {
        button.disabled = false;
      }
    }
    stepUp.addEventListener("click", () => act(stepUp, `/sessions/${encodeURIComponent(sid)}/step-up`, {},
      "Step-up required: the user must confirm with a second factor."));
    terminate.addEventListener("click", () => act(terminate, `/sessions/${encodeURIComponent(sid)}/terminate`,
      { reason: "terminated from the security dashboard" }, "Session terminated."));

    async function refresh() {
      try {
        detail = await getJSON(`/sessions/${encodeURIComponent(sid)}`);
        if (polls % EVENTS_EVERY === 0 || !sessionEvents.length) {
          sessionEvents = (await getJSON(`/events/recent?limit=50&sid=${encodeURIComponent(sid)}`)).events;
        }
      } catch (e) {
        if (!detail) status.textContent = `Cannot load this session: ${e.message}`;
      }
      draw();
    }

    function draw() {
      if (!detail) return;
      const a = detail.assessment || {};
      const row = rows.find((r) => r.sid === sid);
      remember(sid, Date.now() / 1000, a.risk, Object.fromEntries(
        Object.entries(a.signals || {}).map(([k, s]) => [k, s.score])));
      title.replaceChildren(
        el("h2", {}, detail.sub, " ", badge(detail.state)),
        el("div", { class: "sub" }, `${detail.route} \u00b7 ${detail.sid}`,
          detail.state_reason ? ` \u00b7 ${detail.state_reason}` : ""));
      terminate.disabled = detail.state === "terminated";
      stepUp.disabled = detail.state === "terminated";

      const h = history.get(sid) || [];
      riskBox.replaceChildren(plot(h, [{ key: "risk", label: "risk", value: (p) => p.risk }],
        { label: "risk over time", threshold: 0.8 }), el("div", { class: "big" }, riskBar(a.risk)));
      const present = SIGNALS.filter((n) => h.some((p) => p.signals && p.signals[n] !== undefined));
      const series = present.map((n) => ({ key: n, label: n, value: (p) => (p.signals || {})[n] }));
      signalBox.replaceChildren(plot(h, series, { label: "signal scores over time" }), legend(series));

      const signals = a.signals || {};
      signalCards.replaceChildren(...(Object.keys(signals).length ? Object.entries(signals).map(([name, s]) =>
        el("div", { class: `signal ${s.sufficient ? "" : "thin"}` },
          el("div", { class: "name" }, el("span", { class: `swatch s-${name}` }), name),
          el("div", { class: "score" }, riskBar(s.score)),
          el("div", { class: "sub", text: s.sufficient ? "sufficient evidence" : "not enough evidence yet" }),
          el("div", { class: "sub", text: evidenceText(s.evidence) }),
          details(s.details),
          s.explanation ? el("p", { class: "why", text: s.explanation }) : null))
        : [el("p", { class: "empty", text: "No input scored yet." })]));

      const d = detail.decision || {};
      const added = row ? row.added_latency_ms : null;
      facts.replaceChildren(...[
        ["User", `${detail.sub}${detail.email ? " <" + detail.email + ">" : ""}`],
        ["Groups", (detail.groups || []).join(", ") || "\u2013"],
        ["Route", detail.route], ["Input", row ? row.sources.join(", ") : "\u2013"],
        ["Client", `${detail.client_ip || "\u2013"}${detail.country ? " (" + detail.country + ")" : ""}`],
        ["Site", detail.site || "\u2013"], ["Est. added latency", fmt.ms(added)],
        ["Authenticated", `${detail.acr || ""} (${(detail.amr || []).join(", ")})`],
        ["Age / idle", `${fmt.ago(detail.age_seconds)} / ${fmt.ago(detail.idle_seconds)}`],
        ["Connections", detail.connections], ["Step-ups", (detail.step_up || {}).count || 0],
        ["Last decision", d.action ? `${d.action} by ${baseName(d.policy_file) || "admin"} / ${d.rule_id}` : "\u2013"],
      ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));

      decisions.replaceChildren(...decisionItems(sessionEvents, d));
    }

    return { kind: "session", sid, update: draw, refresh };
  }

  function baseName(path) {
    return path ? String(path).split("/").pop() : "";
  }

  function evidenceText(e) {
    if (!e) return "";
    return `evidence: ${e.keystrokes || 0} keystrokes, ${(e.seconds || 0).toFixed(0)} s, ${e.samples || 0} samples`;
  }

  function details(d) {
    const entries = Object.entries(d || {});
    if (!entries.length) return null;
    return el("div", { class: "details" }, entries.slice(0, 8).map(([k, v]) =>
      el("span", { class: "kv" }, el("span", { class: "k", text: k.replace(/_/g, " ") }),
        el("span", { class: "v", text: typeof v === "number" ? +v.toFixed(3) : v }))));
  }

  function decisionItems(events, last) {
    const items = events.filter((e) => e.kind === "finding" || e.kind === "logoff").map((e) => {
      const why = e.why || {};
      const triggered = Object.entries(why.signals || {}).filter(([, s]) => s.triggered);
      return el("li", { class: `event kind-${e.kind}` },
        el("span", { class: "when", text: fmt.time(e.time_ms) }),
        el("span", { class: `tag ${e.action ? "act-" + e.action : ""}`, text: e.action || e.kind }),
        e.shadow ? el("span", { class: "tag shadow", text: "shadow" }) : null,
        el("span", { class: "msg", text: e.message }),
        e.rule_id ? el("span", { class: "who", text: `${baseName(e.policy_file) || "admin"} / ${e.rule_id}` }) : null,
        why.risk !== undefined || triggered.length ? el("div", { class: "evidence" },
          why.risk !== undefined ? el("span", { class: "kv" }, el("span", { class: "k", text: "risk" }),
            el("span", { class: "v", text: fmt.risk(why.risk) })) : null,
          why.added_latency_ms !== undefined ? el("span", { class: "kv" },
            el("span", { class: "k", text: "added latency" }), el("span", { class: "v", text: fmt.ms(why.added_latency_ms) })) : null,
          triggered.map(([n, s]) => el("span", { class: "kv" }, el("span", { class: "k", text: n }),
            el("span", { class: "v", text: `${fmt.risk(s.score)} (${evidenceText(s.evidence).replace("evidence: ", "")})` }))),
          why.evidence ? el("span", { class: "sub", text: evidenceText(why.evidence) }) : null) : null);
    });
    if (!items.length && last && last.action) {
      items.push(el("li", { class: "event" }, el("span", { class: `tag act-${last.action}`, text: last.action }),
        el("span", { class: "msg", text: last.reason || "" })));
    }
    return items.length ? items : [el("li", { class: "empty", text: "No decisions for this session." })];
  }

  // ------------------------------------------------------------------ routing and polling

  function route() {
    const m = window.location.hash.match(/^#\/session\/(.+)$/);
    if (m) {
      const sid = decodeURIComponent(m[1]);
      view = sessionView(sid);
      seedHistory(sid).then(() => view.update());
      view.refresh();
    } else {
      view = listView();
      view.update();
    }
  }

  async function poll() {
    try {
      const data = await getJSON("/dashboard/sessions");
      rows = data.sessions;
      eventsStatus = data.events;
      for (const r of rows) {
        remember(r.sid, data.now, r.risk, Object.fromEntries(
          Object.entries(r.signals || {}).map(([k, s]) => [k, s.score])));
      }
      if (view && view.kind === "list" && polls % EVENTS_EVERY === 0) {
        recent = (await getJSON("/events/recent?limit=30")).events;
      }
      polls += 1;
      live.textContent = `live \u00b7 ${fmt.time(Date.now())}`;
      live.className = "live ok";
      if (view.kind === "session") await view.refresh(); else view.update();
    } catch (e) {
      live.textContent = `disconnected: ${e.message}`;
      live.className = "live error";
    } finally {
      window.setTimeout(poll, POLL_MS);
    }
  }

  window.addEventListener("hashchange", route);
  route();
  poll();
})();
