// Devices: the whole list loaded once (paged by the API, 1,000 a request), then filtered
// and sorted in the browser: a keystroke costs no request. At most 500 rows are drawn at
// a time, so 10,000 devices stay quick; the filter narrows to the rest.
"use strict";

(() => {
  const { all, el, fill, badge, ago, feed, debounce } = window.netmon;
  const MAX_ROWS = 500;
  const filter = document.getElementById("filter");
  const status = document.getElementById("status");
  const count = document.getElementById("count");
  const body = document.querySelector("#devices tbody");
  let devices = [];
  let sortKey = "name";
  let sortDir = 1;

  filter.value = new URLSearchParams(location.search).get("name") || "";

  function text(d) {
    return [d.name, d.address, d.site, d.role, d.platform, ...(d.tags || [])].join(" ").toLowerCase();
  }

  function draw() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const wanted = status.value;
    const shown = devices.filter((d) => (!wanted || d.status === wanted) && words.every((w) => d._text.includes(w)));
    shown.sort((a, b) => sortDir * String(a[sortKey] || "").localeCompare(String(b[sortKey] || ""), undefined, { numeric: true }));
    fill(body, shown.slice(0, MAX_ROWS).map((d) =>
      el("tr", { "data-name": d.name },
        el("td", {}, el("a", { href: `/devices/${d.id}`, text: d.name })),
        el("td", {}, badge(d.status)),
        el("td", { text: d.address || "" }),
        el("td", { text: d.site || "" }),
        el("td", { text: d.role || "" }),
        el("td", { text: d.platform || "" }),
        el("td", { title: d.last_poll || "", text: ago(d.last_poll) }))));
    count.textContent = shown.length > MAX_ROWS
      ? `${MAX_ROWS} of ${shown.length} shown (of ${devices.length}); filter to narrow`
      : `${shown.length} of ${devices.length}`;
  }

  async function load() {
    devices = (await all("/api/v1/devices")).map((d) => ({ ...d, _text: text(d) }));
    draw();
  }

  for (const th of document.querySelectorAll("#devices th[data-key]")) {
    th.addEventListener("click", () => {
      sortDir = sortKey === th.dataset.key ? -sortDir : 1;
      sortKey = th.dataset.key;
      for (const other of document.querySelectorAll("#devices th")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      draw();
    });
  }
  filter.addEventListener("input", debounce(draw, 80));
  status.addEventListener("change", draw);
  load().catch(console.error);
  // Reachability changes arrive as events; the list is re-read after a burst of them.
  const later = debounce(() => load().catch(console.error), 2000);
  feed("events", {}, (message) => message.type === "events" && later());
  setInterval(later, 60000);
})();
