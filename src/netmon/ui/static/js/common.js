// Shared by every page: API calls with the session cookie, safe element building (text
// only, never HTML strings), formatting, and WebSocket feeds that reconnect by themselves.
"use strict";

window.netmon = (() => {
  const main = document.getElementById("main");

  // The cookie rides along by itself; X-Requested-With is the CSRF proof the API asks of
  // cookie-authenticated writes (docs/ui.md).
  async function api(path, options = {}) {
    const headers = { Accept: "application/json", "X-Requested-With": "netmon" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      credentials: "same-origin",
      ...options,
      headers: { ...headers, ...(options.headers || {}) },
    });
    if (res.status === 401) {
      location.assign("/login");
      throw new Error("signed out");
    }
    const type = res.headers.get("content-type") || "";
    const body = type.includes("json") ? await res.json() : await res.text();
    if (!res.ok) {
      const error = new Error((body && body.detail) || res.statusText);
      error.status = res.status;
      throw error;
    }
    return body;
  }

  // Every item of a paged list (?limit=1000, following next_cursor).
  async function all(path, params = {}) {
    let items = [];
    let cursor = null;
    do {
      const query = new URLSearchParams(params);
      query.set("limit", "1000");
      if (cursor) query.set("cursor", cursor);
      const page = await api(`${path}?${query}`);
      items = items.concat(page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fill(node, rows) {
    node.replaceChildren(...rows);
  }

  function ago(time) {
    if (!time) return "never";
    const seconds = Math.round((Date.now() - new Date(time).getTime()) / 1000);
    if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function si(value, unit = "") {
    if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
    let v = Number(value);
    const prefixes = ["", "k", "M", "G", "T"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < prefixes.length - 1) {
      v /= 1000;
      i += 1;
    }
    return `${v.toFixed(v < 10 && i > 0 ? 2 : v < 100 ? 1 : 0)} ${prefixes[i]}${unit}`;
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind || text}`, text });
  }

  // A feed of /ws/{kind}: subscribes on every (re)connection; the dot in the bar shows
  // whether it is connected.
  function feed(kind, subscription, onMessage) {
    const dot = document.getElementById("live");
    let delay = 1000;
    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = new WebSocket(`${scheme}${location.host}/ws/${kind}`);
      ws.onopen = () => {
        delay = 1000;
        ws.send(JSON.stringify({ subscribe: subscription }));
        if (dot) dot.classList.add("on");
      };
      ws.onmessage = (message) => onMessage(JSON.parse(message.data));
      ws.onclose = () => {
        if (dot) dot.classList.remove("on");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open();
  }

  // Calls fn at most once per `ms`, the last call winning: many feed messages, one reload.
  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function eventItem(event) {
    return el(
      "li",
      { class: `event ${event.severity}`, "data-kind": event.kind },
      el("time", { datetime: event.time, text: new Date(event.time).toLocaleTimeString() }),
      " ",
      el("a", { href: `/devices?name=${encodeURIComponent(event.device)}`, text: event.device }),
      " ",
      el("b", { text: event.kind }),
      " ",
      event.message || ""
    );
  }

  return {
    main,
    operator: main.dataset.operator === "yes",
    api,
    all,
    el,
    fill,
    ago,
    si,
    badge,
    feed,
    debounce,
    eventItem,
  };
})();
