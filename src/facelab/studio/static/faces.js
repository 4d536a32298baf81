// The faces page: a virtual grid of a faceset (only the rows in view are in the DOM, their
// thumbnails made once and cached by the server), selection, trash and undo through the
// faceset journal, sorting and the coverage plot as jobs, landmarks on hover, metadata.

import { api, el, jobs, onJob, toast } from "./app.js";

const OVERSCAN = 1;  // rows drawn above and below the view
const PAD = 12;      // a cell's padding and border, both sides
const BATCH = 128;   // thumbnails per request
const CACHE = 4000;  // thumbnails kept in the page

export async function mount(root) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let side = params.get("side") === "dst" ? "dst" : "src";
  let names = [], keys = [], thumb = 128, selected = new Set(), anchor = null, current = null;
  let cols = 1, cell = thumb + PAD, rows = new Map(), alive = true, hoverTimer = null;
  let wanted = new Set(), fetching = false;
  const thumbs = new Map();  // "name|key" → data URL, oldest first

  const sideSel = el("select", { id: "faces-side" }, ["src", "dst"].map((s) =>
    el("option", { value: s, selected: s === side }, `data_${s}/aligned`)));
  const count = el("span", { id: "faces-count", class: "muted" });
  const methodSel = el("select", { id: "sort-method", title: "Sort method" });
  const sortBtn = el("button", { type: "button", id: "sort-run" }, "Sort");
  const trashBtn = el("button", { type: "button", id: "trash", class: "danger", disabled: true }, "Trash (Del)");
  const undoBtn = el("button", { type: "button", id: "undo" }, "Undo (Ctrl+Z)");
  const statsBtn = el("button", { type: "button", id: "stats" }, "Coverage plot");
  const spacer = el("div", { class: "grid-spacer" });
  const viewport = el("div", { class: "grid-viewport", id: "grid", tabindex: "0" }, spacer);
  const preview = el("img", { id: "face-preview", alt: "" });
  const metaBox = el("pre", { id: "face-meta", class: "muted" }, "Click a face for its metadata; hover for its landmarks.");
  const plotBox = el("div", { class: "plot", id: "plot" });
  root.append(el("div", { class: "faces" },
    el("div", { class: "faces-main" },
      el("div", { class: "toolbar" }, sideSel, count, el("span", { class: "spacer" }), methodSel,
        sortBtn, statsBtn, trashBtn, undoBtn), viewport),
    el("aside", { class: "side-panel" }, preview, metaBox, plotBox)));

  const url = (kind, i) => `/api/faces/${side}/${kind}/${encodeURIComponent(names[i])}`;

  function layout() {
    cell = thumb + PAD;
    cols = Math.max(1, Math.floor((viewport.clientWidth - 2) / cell));
    spacer.style.height = `${Math.ceil(names.length / cols) * cell}px`;
    spacer.replaceChildren();
    rows.clear();
    wanted.clear();
    draw();
  }

  function makeRow(r) {
    const row = el("div", { class: "grid-row", "data-row": r });
    row.style.transform = `translateY(${r * cell}px)`;
    for (let i = r * cols; i < Math.min(names.length, (r + 1) * cols); i++) {
      const img = el("img", { width: thumb, height: thumb, alt: names[i], draggable: "false",
        "data-name": names[i] });
      const cached = thumbs.get(`${names[i]}|${keys[i]}`);
      if (cached) img.src = cached; else wanted.add(i);
      const cls = "face" + (selected.has(names[i]) ? " selected" : "") + (current === names[i] ? " current" : "");
      row.append(el("div", { class: cls, "data-i": i, title: names[i] }, img));
    }
    return row;
  }

  function draw() {
    const top = viewport.scrollTop, height = viewport.clientHeight;
    const total = Math.ceil(names.length / cols);
    const first = Math.max(0, Math.floor(top / cell) - OVERSCAN);
    const last = Math.min(total - 1, Math.ceil((top + height) / cell) + OVERSCAN);
    for (const [r, node] of rows) if (r < first || r > last) { node.remove(); rows.delete(r); }
    for (let r = first; r <= last; r++) {
      if (!rows.has(r)) { const row = makeRow(r); rows.set(r, row); spacer.append(row); }
    }
    if (wanted.size && !fetching) fetchThumbs();
  }

  // thumbnails in batches (one request per screen, not one per face), kept by name and key
  async function fetchThumbs() {
    fetching = true;
    try {
      while (wanted.size) {
        const ask = [...wanted].filter((i) => i < names.length).slice(0, BATCH);
        for (const i of ask) wanted.delete(i);
        const kept = ask.filter((i) => rows.has(Math.floor(i / cols)));  // still in view
        if (!kept.length) continue;
        const got = await api(`/api/faces/${side}/thumbs?names=` +
          kept.map((i) => encodeURIComponent(names[i])).join("/"));
        for (const i of kept) {
          const data = got[names[i]];
          if (!data) continue;
          const src = `data:image/jpeg;base64,${data}`;
          thumbs.set(`${names[i]}|${keys[i]}`, src);
          const img = spacer.querySelector(`.face[data-i="${i}"] img`);
          if (img && img.dataset.name === names[i]) img.src = src;
        }
        while (thumbs.size > CACHE) thumbs.delete(thumbs.keys().next().value);
      }
    } catch (e) { toast(e.message, "error"); } finally { fetching = false; }
  }

  function paintSelection() {
    for (const node of spacer.querySelectorAll(".face")) {
      const name = names[Number(node.dataset.i)];
      node.classList.toggle("selected", selected.has(name));
      node.classList.toggle("current", current === name);
    }
    trashBtn.disabled = selected.size === 0;
    count.textContent = `${names.length} faces` + (selected.size ? `, ${selected.size} selected` : "");
  }

  async function load(keepScroll = false) {
    const top = viewport.scrollTop;
    // the first screen's thumbnails come with the listing: one request, not two in a row
    const first = Math.max(1, Math.floor((viewport.clientWidth - 2) / cell)) *
      (Math.ceil(viewport.clientHeight / cell) + OVERSCAN + 1);
    const data = await api(`/api/faces/${side}?thumbs=${keepScroll ? 0 : first}`);
    if (!alive) return;
    names = data.names; keys = data.keys; thumb = data.thumb;
    for (const [i, b64] of Object.entries(data.thumbs)) {
      if (b64) thumbs.set(`${names[i]}|${keys[i]}`, `data:image/jpeg;base64,${b64}`);
    }
    const present = new Set(names);
    selected = new Set([...selected].filter((n) => present.has(n)));
    if (!keepScroll) viewport.scrollTop = 0; else viewport.scrollTop = top;
    layout();
    paintSelection();
    plotBox.replaceChildren(data.plot ? el("img", { src: `/ws/${data.plot}`, alt: "coverage plot" }) : "");
    if (!names.length) spacer.replaceChildren(el("div", { class: "empty" }, `No faces in ${data.folder}.`));
    viewport.dataset.loaded = String(names.length);
  }

  async function showMeta(i) {
    current = names[i];
    paintSelection();
    try {
      const m = await api(url("meta", i));
      if (current !== names[i]) return;  // another face was clicked since: its answer shows
      const show = (v) => typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2)
        : Array.isArray(v) && v.length > 8 ? `[${v.length} items]`
          : Array.isArray(v) ? `[${v.map(show).join(", ")}]` : JSON.stringify(v);
      metaBox.textContent = Object.entries(m).map(([k, v]) => `${k}: ${show(v)}`).join("\n");
      metaBox.classList.remove("muted");
    } catch (e) { if (current === names[i]) metaBox.textContent = e.message; }
  }

  viewport.addEventListener("scroll", () => requestAnimationFrame(draw), { passive: true });
  const resize = new ResizeObserver(() => layout());
  resize.observe(viewport);

  viewport.addEventListener("click", (ev) => {
    const node = ev.target.closest(".face");
    if (!node) return;
    const i = Number(node.dataset.i), name = names[i];
    if (ev.shiftKey && anchor !== null) {
      const [a, b] = [Math.min(anchor, i), Math.max(anchor, i)];
      if (!(ev.ctrlKey || ev.metaKey)) selected.clear();
      for (let k = a; k <= b; k++) selected.add(names[k]);
    } else if (ev.ctrlKey || ev.metaKey) {
      if (selected.has(name)) selected.delete(name); else selected.add(name);
      anchor = i;
    } else {
      selected = new Set([name]); anchor = i;
    }
    showMeta(i);
  });
  viewport.addEventListener("mouseover", (ev) => {
    const node = ev.target.closest(".face");
    if (!node) return;
    clearTimeout(hoverTimer);
    const i = Number(node.dataset.i);
    hoverTimer = setTimeout(() => { preview.src = url("debug", i); preview.alt = `${names[i]} landmarks`; }, 120);
  });

  async function trash() {
    if (!selected.size) return;
    const list = [...selected];
    try {
      const op = await api(`/api/faces/${side}/trash`, { method: "POST", body: { names: list } });
      toast(`Moved ${op.files} faces to the trash (undo: Ctrl+Z).`);
      selected.clear();
      await load(true);
    } catch (e) { toast(e.message, "error"); }
  }

  async function undo() {
    try {
      const ops = await api(`/api/faces/${side}/undo`, { method: "POST" });
      toast(ops.map((o) => `Undid ${o.command}.`).join(" "));
      await load(true);
    } catch (e) { toast(e.message, "error"); }
  }

  function onKey(ev) {
    if (ev.target.closest("input, select, textarea")) return;
    if (ev.key === "Delete") { ev.preventDefault(); trash(); }
    else if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
    else if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "a") {
      ev.preventDefault(); selected = new Set(names); paintSelection();
    } else if (ev.key === "Escape") { selected.clear(); paintSelection(); }
  }
  document.addEventListener("keydown", onKey);

  trashBtn.addEventListener("click", trash);
  undoBtn.addEventListener("click", undo);
  sideSel.addEventListener("change", () => {
    side = sideSel.value; selected.clear(); current = null;
    history.replaceState(null, "", `#/faces?side=${side}`);
    load().catch((e) => toast(e.message, "error"));
  });
  sortBtn.addEventListener("click", () =>
    jobs.start("sort", { side, by: methodSel.value }).catch((e) => toast(e.message, "error")));
  statsBtn.addEventListener("click", () =>
    jobs.start("stats", { side }).catch((e) => toast(e.message, "error")));
  const off = onJob((kind, job) => {
    if (kind === "end" && (job.stage === "sort" || job.stage === "stats" || job.stage === "extract")) {
      load(job.stage === "stats").catch((e) => toast(e.message, "error"));
    }
  });

  try {
    const [methods] = await Promise.all([api("/api/faces-methods"), load()]);
    methodSel.replaceChildren(...methods.map((m) => el("option", { value: m.name, title: m.doc }, m.name)));
  } catch (e) { toast(e.message, "error"); }
  return () => { alive = false; off(); resize.disconnect(); document.removeEventListener("keydown", onKey); };
}
