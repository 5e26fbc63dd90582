// Alerts: open ones (or every state, with history), acknowledge and silence (operator),
// silences, and the live event stream. A viewer sees the buttons disabled; the API
// refuses the call anyway (403), which is what counts.
"use strict";

(() => {
  const { api, all, el, fill, badge, ago, feed, debounce, eventItem, operator } = window.netmon;
  const error = document.getElementById("error");
  let view = "open";

  function show(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  async function act(path, body, button) {
    button.disabled = true;
    try {
      await api(path, { method: "POST", body: JSON.stringify(body) });
      show("");
    } catch (e) {
      show(`${button.textContent}: ${e.message}`);
    }
    await load();
  }

  function row(a) {
    const ack = el("button", { class: "ack", disabled: !operator || a.state !== "firing", title: operator ? "" : "needs the operator role", text: "Acknowledge" });
    ack.addEventListener("click", () => act(`/api/v1/alerts/${a.id}/ack`, { comment: "from the web UI" }, ack));
    const silence = el("button", { class: "silence", disabled: !operator || a.state === "resolved", title: operator ? "" : "needs the operator role", text: "Silence 1 h" });
    const matchers = [`rule="${a.rule}"`, `device="${a.device}"`];
    silence.addEventListener("click", () => act("/api/v1/silences", { matchers, duration: "1h", comment: "from the web UI" }, silence));
    return el("tr", { "data-id": a.id, "data-state": a.state },
      el("td", {}, badge(a.severity)),
      el("td", {}, badge(a.state), a.silenced_by.length ? badge("silenced") : null,
        a.acknowledged_by ? el("small", { text: ` by ${a.acknowledged_by}` }) : null),
      el("td", {}, el("button", { class: "link history", title: "this alert's history", text: a.rule, onclick: (e) => history(a.id, e.target) })),
      el("td", {}, el("a", { href: `/devices?name=${encodeURIComponent(a.device)}`, text: a.device })),
      el("td", { text: a.summary }),
      el("td", { title: a.started_at || a.pending_at, text: ago(a.started_at || a.pending_at) }),
      el("td", { class: "actions" }, ack, " ", silence));
  }

  // An alert's transitions (pending, firing, acknowledged, resolved...), in a row below it.
  const expanded = new Set(); // alert ids whose history is shown, kept across re-reads

  async function history(id, button, toggle = true) {
    const row = button.closest("tr");
    const open = row.nextElementSibling;
    if (toggle && open && open.classList.contains("history")) {
      open.remove();
      expanded.delete(id);
      return;
    }
    expanded.add(id);
    const detail = await api(`/api/v1/alerts/${id}`);
    const items = detail.history.map((h) => el("li", {},
      el("time", { datetime: h.time, text: new Date(h.time).toLocaleString() }), " ",
      el("b", { text: h.event }), h.actor ? ` by ${h.actor}` : "", h.detail ? ` — ${h.detail}` : ""));
    row.after(el("tr", { class: "history", "data-for": id }, el("td", { colspan: 7 }, el("ul", { class: "events" }, ...items))));
  }

  async function load() {
    const alerts = await all("/api/v1/alerts", view === "all" ? { states: "all" } : {});
    fill(document.querySelector("#alerts tbody"), alerts.map(row));
    for (const id of expanded) {
      const button = document.querySelector(`#alerts tr[data-id="${id}"] button.history`);
      if (button) await history(id, button, false);
    }
    const silences = await api("/api/v1/silences?limit=50");
    fill(document.querySelector("#silences tbody"), silences.items
      .filter((s) => !s.ends_at || new Date(s.ends_at) > new Date())
      .map((s) => el("tr", {},
        el("td", { text: s.matchers.join(", ") }),
        el("td", { text: s.ends_at ? new Date(s.ends_at).toLocaleString() : "–" }),
        el("td", { text: s.created_by || "" }),
        el("td", { text: s.comment || "" }))));
  }

  for (const radio of document.querySelectorAll("input[name=view]")) {
    radio.addEventListener("change", () => {
      view = radio.value;
      load().catch((e) => show(e.message));
    });
  }
  load().catch((e) => show(e.message));
  // Short: a burst of changes (a flap of many interfaces) still costs one re-read.
  const later = debounce(() => load().catch((e) => show(e.message)), 150);
  // Re-read on every change, and once subscribed or after a gap: what changed between
  // the first read and the subscription (or while the feed was away) is not sent again.
  feed("alerts", {}, (message) => ["alert", "subscribed", "gap"].includes(message.type) && later());
  setInterval(later, 30000);
  api("/api/v1/events?limit=50").then((page) =>
    fill(document.getElementById("events"), page.items.map(eventItem))).catch(console.error);
  feed("events", {}, (message) => {
    if (message.type !== "events") return;
    const list = document.getElementById("events");
    for (const e of message.events) list.prepend(eventItem(e));
    while (list.children.length > 200) list.lastChild.remove();
  });
})();
