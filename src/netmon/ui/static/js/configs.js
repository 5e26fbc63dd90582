// Configurations: a device's versions, and the diff of one against the version before it,
// side by side (removed lines on the left, added on the right, context on both).
"use strict";

(() => {
  const { api, all, el, fill, si } = window.netmon;
  const select = document.getElementById("device");
  const body = document.querySelector("#diff tbody");

  // Unified diff -> rows of [left, right, kind]; runs of - and + are paired line by line.
  function sideBySide(text) {
    const rows = [];
    let removed = [];
    let added = [];
    const flush = () => {
      for (let i = 0; i < Math.max(removed.length, added.length); i += 1) {
        rows.push([removed[i] ?? null, added[i] ?? null, "change"]);
      }
      removed = [];
      added = [];
    };
    for (const line of text.split("\n")) {
      if (line.startsWith("---") || line.startsWith("+++")) continue;
      if (line.startsWith("@@")) {
        flush();
        rows.push([line, line, "hunk"]);
      } else if (line.startsWith("-")) removed.push(line.slice(1));
      else if (line.startsWith("+")) added.push(line.slice(1));
      else {
        flush();
        if (line.length) rows.push([line.slice(1), line.slice(1), "same"]);
      }
    }
    flush();
    return rows;
  }

  async function showDiff(version) {
    const diff = await api(`/api/v1/configs/${version.id}/diff`);
    document.getElementById("diff-title").textContent =
      `Diff: version ${diff.from_id ?? "(empty)"} → ${diff.to_id} (+${diff.lines_added} −${diff.lines_removed})`;
    fill(body, sideBySide(diff.diff).map(([left, right, kind]) =>
      el("tr", { class: kind },
        el("td", { class: left === null ? "empty" : kind === "change" ? "del" : "", text: left ?? "" }),
        el("td", { class: right === null ? "empty" : kind === "change" ? "add" : "", text: right ?? "" }))));
  }

  async function showVersions() {
    const versions = await all(`/api/v1/devices/${select.value}/configs`);
    document.getElementById("count").textContent = `${versions.length} versions`;
    fill(document.querySelector("#versions tbody"), versions.map((v) => {
      const tr = el("tr", { class: "pick", "data-id": v.id, tabindex: "0" },
        el("td", { text: new Date(v.collected_at).toLocaleString() }),
        el("td", { text: `${v.source} (${v.protocol})` }),
        el("td", { class: "n", text: si(v.size, "B") }),
        el("td", { class: "n", text: `+${v.lines_added} −${v.lines_removed}` }));
      tr.addEventListener("click", () => {
        for (const other of document.querySelectorAll("#versions tr")) other.removeAttribute("aria-selected");
        tr.setAttribute("aria-selected", "true");
        showDiff(v).catch(console.error);
      });
      return tr;
    }));
    if (versions.length) document.querySelector("#versions tbody tr").click();
    else fill(body, []);
  }

  async function start() {
    const devices = await all("/api/v1/devices");
    fill(select, devices.map((d) => el("option", { value: d.id, text: d.name })));
    const wanted = new URLSearchParams(location.search).get("device");
    if (wanted) select.value = wanted;
    select.addEventListener("change", () => showVersions().catch(console.error));
    if (devices.length) await showVersions();
  }
  start().catch(console.error);
})();
