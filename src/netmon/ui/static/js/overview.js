// Overview: devices by status per site and role, open alerts by severity, poll health.
// Re-read (debounced) on every event and alert change, and every 30 s.
"use strict";

(() => {
  const { api, all, el, fill, feed, debounce, eventItem, ago } = window.netmon;
  const STATUSES = ["up", "down", "unknown", "unpolled", "retired"];
  const SEVERITIES = ["critical", "major", "minor", "warning", "info"];

  function counts(devices, key) {
    const table = new Map();
    for (const d of devices) {
      const name = d[key] || "(none)";
      if (!table.has(name)) table.set(name, Object.fromEntries(STATUSES.map((s) => [s, 0])));
      table.get(name)[d.status] += 1;
    }
    return [...table.entries()].sort(([a], [b]) => a.localeCompare(b));
  }

  function grid(node, rows, key) {
    const head = el("tr", {}, el("th", { text: key }), ...STATUSES.map((s) => el("th", { text: s })));
    const body = rows.map(([name, c]) =>
      el("tr", {}, el("td", { text: name }),
        ...STATUSES.map((s) => el("td", { class: c[s] && s !== "up" ? `n ${s}` : "n", text: c[s] }))));
    fill(node, [el("thead", {}, head), el("tbody", {}, ...body)]);
  }

  async function refresh() {
    const [devices, alerts, ready, metrics] = await Promise.all([
      all("/api/v1/devices"),
      all("/api/v1/alerts"),
      // 503 while not ready: the body still says why.
      fetch("/health/ready").then((r) => r.json()).catch(() => null),
      fetch("/metrics", { credentials: "same-origin" }).then((r) => (r.ok ? r.text() : "")).catch(() => ""),
    ]);
    const totals = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const d of devices) totals[d.status] += 1;
    fill(document.getElementById("totals"), [
      el("div", { class: "card" }, el("b", { text: devices.length }), " devices"),
      ...STATUSES.map((s) => el("div", { class: `card ${s}`, "data-status": s }, el("b", { text: totals[s] }), ` ${s}`)),
    ]);
    grid(document.getElementById("by-site"), counts(devices, "site"), "site");
    grid(document.getElementById("by-role"), counts(devices, "role"), "role");
    const bySeverity = Object.fromEntries(SEVERITIES.map((s) => [s, { firing: 0, acknowledged: 0 }]));
    for (const a of alerts) {
      if (a.state === "firing" || a.state === "acknowledged") bySeverity[a.severity][a.state] += 1;
    }
    fill(document.getElementById("alerts-by-severity"), SEVERITIES.map((s) =>
      el("a", { class: `card ${s}`, href: "/alerts" }, el("b", { text: bySeverity[s].firing }),
        ` ${s}`, el("small", { text: ` (${bySeverity[s].acknowledged} acked)` }))));
    // Poll health: failing devices, the stalest poll, the poller's lag (readiness check)
    // and its overruns (netmon's own /metrics; a token limited to sites does not get them).
    const polled = devices.filter((d) => d.lifecycle === "active" || d.lifecycle === "muted");
    const failing = polled.filter((d) => d.status === "down");
    const stalest = polled.reduce((old, d) => (!old || (d.last_poll || "") < old ? d.last_poll || "" : old), null);
    const poller = ready && ready.checks ? ready.checks.poller : null;
    const overruns = /^netmon_poll_overruns_total\s+(\S+)/m.exec(metrics || "");
    const dl = el("dl", { class: "facts" });
    const row = (name, value, cls) => dl.append(el("dt", { text: name }), el("dd", { class: cls, text: value }));
    row("failing devices", failing.length ? failing.map((d) => d.name).join(", ") : "none", failing.length ? "down" : "up");
    row("stalest poll", stalest ? ago(stalest) : "–");
    row("poller", poller ? (poller.ok ? "ok" : `failing: ${poller.detail || ""}`) : "–", poller && !poller.ok ? "down" : "");
    row("lag", poller && poller.value !== undefined ? `${Number(poller.value).toFixed(1)} s` : "–");
    row("overruns", overruns ? String(Number(overruns[1])) : "–");
    fill(document.getElementById("poll-health"), [dl]);
  }

  async function events() {
    const page = await api("/api/v1/events?limit=20");
    fill(document.getElementById("events"), page.items.map(eventItem));
  }

  const later = debounce(() => refresh().catch(console.error), 1000);
  refresh().catch(console.error);
  events().catch(console.error);
  setInterval(later, 30000);
  feed("alerts", {}, later);  // every message, "subscribed" and "gap" included: re-read
  feed("events", {}, (message) => {
    if (message.type !== "events") return;
    const list = document.getElementById("events");
    for (const e of message.events) list.prepend(eventItem(e));
    while (list.children.length > 50) list.lastChild.remove();
    later();
  });
})();
