// One device: facts, poll health, interfaces, and four graphs (traffic, errors, CPU,
// memory) over 1 h to 30 d. The range API picks raw samples or the 5-minute and 1-hour
// rollups by step and age; the graphs then follow the metrics feed live.
"use strict";

(() => {
  const { api, el, fill, si, badge, ago, feed, debounce, eventItem } = window.netmon;
  const id = window.netmon.main.dataset.deviceId;
  // Range (s) -> step: none for the last hour (raw samples), then about 300 points.
  const STEPS = { 3600: null, 21600: "2m", 86400: "5m", 604800: "1h", 2592000: "3h" };
  const STEP_SECONDS = { "2m": 120, "5m": 300, "1h": 3600, "3h": 10800 };
  const sum = (values, metric, scale = 1) => {
    let total = null;
    for (const v of values) if (v.metric === metric) total = (total || 0) + v.value * scale;
    return total;
  };
  const CHARTS = {
    traffic: {
      metrics: ["ifHCInOctets:rate", "ifHCOutOctets:rate"],
      lines: [["in", "#1f6feb", (v) => sum(v, "ifHCInOctets:rate", 8)], ["out", "#2da44e", (v) => sum(v, "ifHCOutOctets:rate", 8)]],
    },
    errors: {
      metrics: ["ifInErrors:rate", "ifOutErrors:rate"],
      lines: [["in", "#cf222e", (v) => sum(v, "ifInErrors:rate")], ["out", "#bf8700", (v) => sum(v, "ifOutErrors:rate")]],
    },
    cpu: {
      metrics: ["hrProcessorLoad"],
      lines: [["cpu", "#8250df", (v) => {
        const cpus = v.filter((x) => x.metric === "hrProcessorLoad");
        return cpus.length ? cpus.reduce((a, x) => a + x.value, 0) / cpus.length : null;
      }]],
    },
    memory: {
      metrics: ["hrStorageUsed", "hrStorageSize"],
      lines: [["used", "#0969da", (v) => {
        const memory = v.filter((x) => /mem|ram|swap/i.test(x.labels.hrStorageDescr || x.labels.storage || ""));
        const pick = memory.length ? memory : v;
        const used = sum(pick, "hrStorageUsed");
        const size = sum(pick, "hrStorageSize");
        return used !== null && size ? (100 * used) / size : null;
      }]],
    },
  };
  const METRICS = Object.values(CHARTS).flatMap((c) => c.metrics);
  let device = null;
  let range = 3600;
  let bucket = 10;
  // Per chart: bucket start (s) -> series key -> {metric, labels, value}, the last value of
  // each series in the bucket; lines are computed from it, so late samples just overwrite.
  const state = {};

  function seriesKey(metric, labels) {
    return `${metric}|${JSON.stringify(labels)}`;
  }

  function add(chart, time, metric, labels, value) {
    const t = Math.floor(new Date(time).getTime() / 1000 / bucket) * bucket;
    const buckets = state[chart].buckets;
    if (!buckets.has(t)) buckets.set(t, new Map());
    buckets.get(t).set(seriesKey(metric, labels), { metric, labels, value: Number(value) });
  }

  function draw(chart) {
    const spec = CHARTS[chart];
    const s = state[chart];
    const since = Date.now() / 1000 - range;
    const times = [...s.buckets.keys()].filter((t) => t >= since).sort((a, b) => a - b);
    const data = [times, ...spec.lines.map(([, , f]) => times.map((t) => f([...s.buckets.get(t).values()])))];
    const node = document.getElementById(`chart-${chart}`);
    node.dataset.points = String(times.length);
    if (!s.plot) {
      s.plot = new uPlot({
        width: Math.max(node.clientWidth, 300),
        height: 180,
        series: [{}, ...spec.lines.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: true }))],
        axes: [{}, { size: 60, values: (u, ticks) => ticks.map((v) => si(v)) }],
        legend: { live: true },
      }, data, node);
    } else {
      s.plot.setData(data);
    }
  }

  async function loadGraphs() {
    const step = STEPS[range];
    bucket = step ? STEP_SECONDS[step] : 10;
    const query = new URLSearchParams({ device: device.name, start: new Date(Date.now() - range * 1000).toISOString() });
    for (const m of METRICS) query.append("metric", m);
    if (step) query.set("step", step);
    const started = performance.now();
    const result = await api(`/api/v1/metrics/range?${query}`);
    document.getElementById("resolution").textContent =
      `${result.resolution === "raw" ? "raw samples" : `${result.resolution} rollups`}, ${Math.round(performance.now() - started)} ms`;
    for (const chart of Object.keys(CHARTS)) state[chart] = { ...(state[chart] || {}), buckets: new Map() };
    for (const item of result.items) {
      const chart = Object.keys(CHARTS).find((c) => CHARTS[c].metrics.includes(item.series.metric));
      for (const p of item.points) add(chart, p.time, item.series.metric, item.series.labels, p.last ?? p.avg);
    }
    for (const chart of Object.keys(CHARTS)) draw(chart);
  }

  function fact(dl, name, value, cls) {
    dl.append(el("dt", { text: name }), el("dd", { class: cls, text: value === null || value === undefined ? "–" : String(value) }));
  }

  function utilisation(bps, mbps) {
    if (bps === null || bps === undefined || !mbps) return "–";
    return `${((100 * bps) / (mbps * 1e6)).toFixed(1)} %`;
  }

  async function loadDetail() {
    const detail = await api(`/api/v1/devices/${id}`);
    device = detail.device;
    document.title = `${device.name} · netmon`;
    fill(document.getElementById("name"), [device.name, " ", badge(device.status)]);
    const facts = document.getElementById("facts");
    facts.replaceChildren();
    for (const key of ["address", "site", "role", "platform", "lifecycle", "poller"]) fact(facts, key, device[key]);
    fact(facts, "tags", (device.tags || []).join(", "));
    // Scalar facts only: the nested ones (per-interface aliases) are the table below.
    for (const [key, value] of Object.entries(detail.facts || {})) {
      if (value === null || typeof value !== "object") fact(facts, key, value);
    }
    const h = detail.health;
    const health = document.getElementById("health");
    health.replaceChildren();
    if (!h) fact(health, "state", "not polled yet");
    else {
      fact(health, "reachable", h.reachable ? "yes" : "no", h.reachable ? "up" : "down");
      fact(health, "last poll", `${ago(h.last_poll)} (${Math.round(h.duration_ms)} ms)`);
      fact(health, "last success", ago(h.last_success));
      fact(health, "consecutive failures", h.consecutive_failures, h.consecutive_failures ? "down" : "");
      fact(health, "overruns", h.overruns);
      fact(health, "last error", h.last_error ? `${h.last_error}${h.last_error_class ? ` (${h.last_error_class})` : ""}, ${ago(h.last_error_at)}` : "none");
    }
    const interfaces = [...detail.interfaces].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    fill(document.querySelector("#interfaces tbody"), interfaces.map((i) =>
      el("tr", { "data-name": i.name },
        el("td", { text: i.name }),
        el("td", {}, badge(i.admin_status || "–", i.admin_status)),
        el("td", {}, badge(i.oper_status || "–", i.oper_status)),
        el("td", { class: "n", text: i.speed_mbps ? si(i.speed_mbps * 1e6, "b/s") : "–" }),
        el("td", { class: "n", text: si(i.in_bps, "b/s") }),
        el("td", { class: "n", text: si(i.out_bps, "b/s") }),
        el("td", { class: "n", text: utilisation(i.in_bps, i.speed_mbps) }),
        el("td", { class: "n", text: utilisation(i.out_bps, i.speed_mbps) }),
        el("td", { class: "n", text: `${si(i.in_errors_per_s)} / ${si(i.out_errors_per_s)}` }))));
  }

  async function start() {
    try {
      await loadDetail();
    } catch (error) {
      const node = document.getElementById("error");
      node.textContent = error.status === 404 ? "No such device (or not one of your sites)." : String(error.message);
      node.hidden = false;
      return;
    }
    await loadGraphs();
    const events = await api(`/api/v1/events?device=${encodeURIComponent(device.name)}&limit=20`);
    fill(document.getElementById("events"), events.items.map(eventItem));
    feed("metrics", { devices: [device.name], metrics: METRICS }, (message) => {
      if (message.type !== "samples") return;
      const touched = new Set();
      for (const sample of message.samples) {
        const chart = Object.keys(CHARTS).find((c) => CHARTS[c].metrics.includes(sample.metric));
        if (!chart) continue;
        add(chart, sample.time, sample.metric, sample.labels, sample.value);
        touched.add(chart);
      }
      for (const chart of touched) draw(chart);
    });
    const later = debounce(() => loadDetail().catch(console.error), 1000);
    feed("events", { devices: [device.name] }, (message) => {
      if (message.type !== "events") return;
      const list = document.getElementById("events");
      for (const e of message.events) list.prepend(eventItem(e));
      later();
    });
    setInterval(later, 15000);
  }

  for (const button of document.querySelectorAll("#ranges button")) {
    button.addEventListener("click", () => {
      for (const other of document.querySelectorAll("#ranges button")) other.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      range = Number(button.dataset.range);
      if (device) loadGraphs().catch(console.error);
    });
  }
  start().catch(console.error);
})();
