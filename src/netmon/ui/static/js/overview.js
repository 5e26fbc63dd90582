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
    const [devices, alerts, status] = await Promise.all([
      all("/api/v1/devices"),
      all("/api/v1/alerts"),
      api("/health/ready").catch(() => null),
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
    // Poll health: failing devices and how long ago the stalest active device was polled.
    const polled = devices.filter((d) => d.lifecycle === "active" || d.lifecycle === "muted");
    const failing = polled.filter((d) => d.status === "down");
    const stalest = polled.reduce((old, d) => (!old || (d.last_poll || "") < old ? d.last_poll || "" : old), null);
    const poller = status && status.checks ? status.checks.poller : null;
    fill(document.getElementById("poll-health"), [
      el("dl", { class: "facts" },
        el("dt", { text: "failing devices" }), el("dd", { class: failing.length ? "down" : "", text: failing.length ? failing.map((d) => d.name).join(", ") : "none" }),
        el("dt", { text: "stalest poll" }), el("dd", { text: stalest ? ago(stalest) : "–" }),
        el("dt", { text: "poller" }), el("dd", { text: poller ? `${poller.status}${poller.detail ? `: ${poller.detail}` : ""}` : "–" }),
        el("dt", { text: "overruns, lag" }), el("dd", { text: poller && poller.value !== undefined ? String(poller.value) : "see the device pages" })),
    ]);
  }

  async function events() {
    const page = await api("/api/v1/events?limit=20");
    fill(document.getElementById("events"), page.items.map(eventItem));
  }

  const later = debounce(() => refresh().catch(console.error), 1000);
  refresh().catch(console.error);
  events().catch(console.error);
  setInterval(later, 30000);
  feed("alerts", {}, later);
  feed("events", {}, (message) => {
    if (message.type !== "events") return;
    const list = document.getElementById("events");
    for (const e of message.events) list.prepend(eventItem(e));
    while (list.children.length > 50) list.lastChild.remove();
    later();
  });
})();
