// The mask editor: DeepFaceLab's XSeg editor in the page. Left click adds an include point,
// right click an exclude point, middle click closes the polygon, the wheel undoes and redoes
// points; W skips, E confirms, C/Q/Z walk the faces (Shift ×10), X saves. Polygons are kept
// in face pixels (the pixel-centre convention OpenCV rasterises with); a changed face is
// saved when it is left (never lost), and the mask the polygons paint is shown live.

import { api, el, onJob, toast } from "./app.js";
import { segmenterPanel, tintedMask } from "./masks_net.js";

const STRIP = 11;                 // thumbnails in the strip around the current face
const COLOURS = { include: [63, 185, 80], exclude: [248, 81, 73] };
const KEYS = [
  ["Left click", "add an include point"],
  ["Right click", "add an exclude point"],
  ["Middle click", "close the polygon"],
  ["Wheel up / down", "undo / redo a point"],
  ["W", "skip: to aligned_skipped/, next"],
  ["E", "save, confirm: to aligned_confirmed/, next"],
  ["C", "next face"],
  ["Q / Z", "previous face"],
  ["Shift + C/Q/Z", "move 10 faces"],
  ["X", "save"],
  ["M", "mask overlay on / off"],
  ["N", "network mask on / off (outside it: red)"],
  ["H", "hide / show this help"],
  ["Ctrl+Z", "undo the last skip or confirm"],
];

function addCss() {
  if (!document.querySelector("link[data-page-css=masks]")) {
    document.head.append(el("link", { rel: "stylesheet", href: "/static/masks.css", "data-page-css": "masks" }));
  }
}

const plain = (polys) => polys.filter((p) => p.closed || p.pts.length >= 3)
  .map((p) => ({ type: p.type, pts: p.pts.map(([x, y]) => [x, y]) }));

export async function mount(root) {
  addCss();
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let side = params.get("side") === "src" ? "src" : "dst";
  let list = [], idx = -1, face = null, img = null, polys = [], redo = [], saved = "[]";
  let overlay = true, mouse = null, wheelAcc = 0, alive = true, chain = Promise.resolve();
  let pending = 0, net = null, netOn = true;

  const sideSel = el("select", { id: "mask-side" }, ["src", "dst"].map((s) =>
    el("option", { value: s, selected: s === side }, `data_${s}`)));
  const pos = el("span", { id: "mask-pos", class: "badge" });
  const nameBox = el("span", { id: "mask-name" });
  const folderBox = el("span", { id: "mask-folder", class: "badge" });
  const dirtyBox = el("span", { id: "mask-dirty", class: "warn" });
  const count = el("input", { id: "copy-count", type: "number", min: 1, max: 10000, value: 5,
    title: "How many following faces of the shot get this mask" });
  const replace = el("input", { id: "copy-replace", type: "checkbox",
    title: "Also replace the polygons of faces that have some" });
  const btn = (id, text, fn, cls) => el("button", { type: "button", id, class: cls, onclick: () => run(fn) }, text);
  const canvas = el("canvas", { id: "mask-canvas", tabindex: "0" });
  const wrap = el("div", { class: "mask-wrap" }, canvas);
  const strip = el("div", { class: "mask-strip", id: "mask-strip" });
  const status = el("div", { id: "mask-status", class: "muted" });
  const help = el("aside", { class: "mask-help", id: "mask-help" },
    el("h3", {}, "Mask editor"),
    el("dl", {}, KEYS.flatMap(([k, v]) => [el("dt", {}, el("kbd", {}, k)), el("dd", {}, v)])),
    el("p", { class: "muted" }, "A changed face is saved when you leave it (C, Q, Z, a thumbnail, ",
      "W, copy). Polygons are stored in the face's metadata; the mask is painted in order: an ",
      "include adds, an exclude cuts out."),
    el("div", { class: "legend" }, el("span", { class: "inc" }, "include"), " ",
      el("span", { class: "exc" }, "exclude")));
  const segmenter = segmenterPanel({ side: () => side, jump: (f, n) => jump(f, n),
    changed: () => run(async () => { await keep(); await loadList(face || list[idx]); await show(idx); }) });
  const box = el("div", { class: "masks", id: "masks" },
    el("div", { class: "masks-main" },
      el("div", { class: "toolbar" }, sideSel, pos, nameBox, folderBox, dirtyBox,
        el("span", { class: "spacer" }),
        btn("mask-save", "Save (X)", save, "primary"), btn("mask-skip", "Skip (W)", () => move("skip")),
        btn("mask-confirm", "Confirm (E)", () => move("confirm")),
        btn("mask-undo", "Undo W/E (Ctrl+Z)", undoMove)),
      wrap,
      el("div", { class: "mask-bar" }, status, el("label", { for: "copy-count" }, "next faces"), count,
        el("label", { for: "copy-replace" }, replace, " replace"),
        btn("mask-copy", "Copy mask to next faces", copy)),
      strip, segmenter.panel),
    help);
  root.append(box);

  function jump(folder, name) {  // "label this one" from the segmenter's list
    run(async () => {
      await keep();
      const i = list.findIndex((f) => f.folder === folder && f.name === name);
      if (i < 0) toast(`${folder}/${name} is no longer here.`, "error"); else await show(i);
    });
  }

  const faceUrl = (f, what = "") =>
    `/api/masks/${side}/face/${f.folder}/${encodeURIComponent(f.name)}${what ? "/" + what : ""}`;
  const state = () => JSON.stringify(plain(polys));
  const dirty = () => face !== null && state() !== saved;
  const open = () => { const p = polys[polys.length - 1]; return p && !p.closed ? p : null; };

  // -- actions run one after another (keys pressed quickly keep their order) ----------------
  function run(fn) {
    pending++; box.dataset.busy = "1";
    chain = chain.then(fn).catch((e) => toast(e.message, "error")).finally(() => {
      if (--pending === 0) delete box.dataset.busy;
    });
    return chain;
  }

  async function loadList(at) {  // at: the face to stay on
    const data = await api(`/api/masks/${side}`);
    list = data.faces;
    count.max = data.max_copy;
    if (at) idx = Math.max(0, list.findIndex((f) => f.name === at.name && f.folder === at.folder));
    box.dataset.count = String(list.length);
  }

  async function show(i) {
    if (!list.length) {
      face = null; idx = -1; polys = []; img = null;
      wrap.replaceChildren(el("div", { class: "empty" }, `No aligned faces in data_${side}.`));
      paint(); return;
    }
    i = Math.max(0, Math.min(list.length - 1, i));
    const f = list[i];
    let data, image;
    try {
      [data, image] = await Promise.all([api(faceUrl(f)), loadImage(faceUrl(f, "image"))]);
    } catch (e) {  // a damaged face, or one moved meanwhile: shown as such, walked past
      if (!alive) return;
      idx = i; face = null; img = null; net = null; polys = []; redo = []; saved = "[]";
      wrap.replaceChildren(el("div", { class: "empty bad" }, `${f.folder}/${f.name}: ${e.message}`));
      paint(); drawStrip(); return;
    }
    if (!alive) return;
    const netMask = data.mask ? await tintedMask(faceUrl(f, "mask")).catch(() => null) : null;
    if (!alive) return;
    idx = i; face = data; img = image; net = netMask;
    polys = data.polys.map((p) => ({ type: p.type, pts: p.pts, closed: true }));
    redo = []; saved = state();
    list[i] = { ...f, polys: data.polys.length };
    if (!wrap.contains(canvas)) wrap.replaceChildren(canvas);
    history.replaceState(null, "", `#/masks?side=${side}&face=${encodeURIComponent(f.name)}`);
    paint(); drawStrip();
  }

  const loadImage = (src) => new Promise((resolve, reject) => {
    const im = Object.assign(new Image(), { onload: () => resolve(im), src,
      onerror: () => reject(new Error("The face image could not be loaded.")) });
  });

  /** Save the current face's polygons when they changed (before it is left). */
  const keep = async () => { if (dirty()) await save(); };

  async function save() {
    if (!face) return;
    const body = { polys: plain(polys) };
    const res = await api(faceUrl(face), { method: "PUT", body });
    face.polys = res.polys;
    polys = res.polys.map((p) => ({ type: p.type, pts: p.pts, closed: true }));
    saved = state();
    list[idx] = { ...list[idx], polys: res.polys.length };
    paint(); drawStrip();
  }

  async function go(step) {
    if (!list.length) return;
    const to = Math.max(0, Math.min(list.length - 1, idx + step));
    if (to === idx) { toast(step > 0 ? "This is the last face." : "This is the first face."); return; }
    await keep();
    await show(to);
  }

  async function move(kind) {  // W or E: the polygons go along, saved first when changed
    if (!face) return;
    const body = kind === "confirm" || dirty() ? { polys: plain(polys) } : {};
    const res = await api(faceUrl(face, kind), { method: "POST", body });
    list[idx] = { ...list[idx], ...res.to };
    face = { ...face, ...res.to };
    saved = state();
    toast(`${res.from.name} → ${res.to.folder}/`);
    await show(idx < list.length - 1 ? idx + 1 : idx);
  }

  async function undoMove() {
    await keep();
    const res = await api(`/api/masks/${side}/undo`, { method: "POST" });
    toast(`Undid ${res.command}.`);
    await loadList(res.to);
    await show(idx);
  }

  async function copy() {
    if (!face) return;
    const n = Number(count.value);
    if (!Number.isInteger(n) || n < 1) { toast("Give how many faces to copy the mask to.", "error"); return; }
    await keep();
    const res = await api(faceUrl(face, "copy"), { method: "POST",
      body: { count: n, overwrite: replace.checked } });
    toast(res.written.length ? `Copied the mask to ${res.written.length} faces (up to ${res.written[res.written.length - 1].name}).`
      : "No following face of this shot took the mask (none, skipped, or masked already).");
    await loadList(face);
    drawStrip();
  }

  // -- editing ---------------------------------------------------------------------------
  function toFace(ev) {
    const r = canvas.getBoundingClientRect();
    const s = face.size;
    // pixel-centre coordinates: the face pixel (i, j) covers [i - .5, i + .5]
    const x = (ev.clientX - r.left) * s / r.width - 0.5;
    const y = (ev.clientY - r.top) * s / r.height - 0.5;
    return [Math.round(x * 100) / 100, Math.round(y * 100) / 100];
  }

  function addPoint(type, xy) {
    const cur = open();
    if (cur && cur.type !== type) {
      status.textContent = `Finish the ${cur.type} polygon first (middle click), or undo its points.`;
      return;
    }
    if (cur) cur.pts = [...cur.pts, xy];
    else polys.push({ type, pts: [xy], closed: false });
    redo = [];
    paint();
  }

  function close() {
    const cur = open();
    if (!cur) return;
    if (cur.pts.length < 3) { status.textContent = "A polygon needs at least 3 points."; return; }
    cur.closed = true; redo = []; paint();
  }

  function undoPoint() {  // wheel up: the last close or point goes to the redo stack
    const last = polys[polys.length - 1];
    if (!last) return;
    if (last.closed) { last.closed = false; redo.push({ close: true }); }
    else {
      redo.push({ type: last.type, xy: last.pts[last.pts.length - 1] });
      last.pts = last.pts.slice(0, -1);
      if (!last.pts.length) polys.pop();
    }
    paint();
  }

  function redoPoint() {  // wheel down
    const r = redo.pop();
    if (!r) return;
    const cur = open();
    if (r.close) { if (cur) cur.closed = true; }
    else if (cur) cur.pts = [...cur.pts, r.xy];
    else polys.push({ type: r.type, pts: [r.xy], closed: false });
    paint();
  }

  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("mousedown", (ev) => {
    ev.preventDefault();  // no middle-button autoscroll, no text selection
    canvas.focus();
    if (!face || pending) return;
    if (ev.button === 0) addPoint("include", toFace(ev));
    else if (ev.button === 2) addPoint("exclude", toFace(ev));
    else if (ev.button === 1) close();
  });
  canvas.addEventListener("mousemove", (ev) => { if (face) { mouse = toFace(ev); if (open()) paint(); } });
  canvas.addEventListener("mouseleave", () => { mouse = null; paint(); });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    if (!face || pending) return;
    const d = ev.deltaY * (ev.deltaMode === 1 ? 40 : ev.deltaMode === 2 ? 800 : 1);
    if (Math.abs(d) >= 40) wheelAcc = d;  // a wheel's notch: one step
    else wheelAcc += d;                   // a touchpad's small deltas add up
    if (Math.abs(wheelAcc) < 40) return;
    if (wheelAcc < 0) undoPoint(); else redoPoint();
    wheelAcc = 0;
  }, { passive: false });

  // -- drawing ---------------------------------------------------------------------------
  const maskCanvas = document.createElement("canvas");

  function paintMask(s) {
    maskCanvas.width = s; maskCanvas.height = s;
    const m = maskCanvas.getContext("2d");
    m.clearRect(0, 0, s, s);
    for (const p of polys) {  // XSeg's rule: in order, include paints, exclude erases
      if (p.pts.length < 3) continue;
      m.globalCompositeOperation = p.type === "include" ? "source-over" : "destination-out";
      m.fillStyle = "#000";
      m.beginPath();
      p.pts.forEach(([x, y], k) => (k ? m.lineTo(x + 0.5, y + 0.5) : m.moveTo(x + 0.5, y + 0.5)));
      m.closePath(); m.fill();
    }
    m.globalCompositeOperation = "source-in";  // tint what is masked
    m.fillStyle = "rgba(76, 159, 254, 0.38)";
    m.fillRect(0, 0, s, s);
    m.globalCompositeOperation = "source-over";
  }

  function paint() {
    const n = list.length;
    pos.textContent = n ? `${idx + 1} / ${n}` : "0 / 0";
    box.dataset.index = String(idx);
    box.dataset.face = face ? `${face.folder}/${face.name}` : "";
    box.dataset.points = String(polys.reduce((a, p) => a + p.pts.length, 0));
    box.dataset.polys = String(polys.filter((p) => p.closed).length);
    box.dataset.overlay = overlay ? "1" : "0";
    box.dataset.net = net && netOn ? "1" : "0";
    nameBox.textContent = face ? face.name : "";
    folderBox.textContent = face ? face.folder : "";
    folderBox.className = `badge ${face ? face.folder : ""}`;
    const d = dirty();
    dirtyBox.textContent = d ? "● unsaved" : "";
    box.dataset.dirty = d ? "1" : "0";
    const cur = open();
    if (cur) status.textContent = `${cur.type} polygon: ${cur.pts.length} point${cur.pts.length === 1 ? "" : "s"}` +
      (cur.pts.length >= 3 ? " (middle click closes)" : "");
    else if (face) status.textContent = `${polys.length} polygon${polys.length === 1 ? "" : "s"}, ` +
      `${face.size}×${face.size} face from ${face.source}`;
    if (!face || !img) return;
    const side = Math.max(64, Math.floor(Math.min(wrap.clientWidth, wrap.clientHeight)));
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = `${side}px`; canvas.style.height = `${side}px`;
    canvas.width = Math.round(side * dpr); canvas.height = Math.round(side * dpr);
    const g = canvas.getContext("2d");
    const s = face.size, k = canvas.width / s;
    g.imageSmoothingEnabled = k < 3;
    g.drawImage(img, 0, 0, canvas.width, canvas.height);
    if (net && netOn) g.drawImage(net, 0, 0, canvas.width, canvas.height);
    if (overlay) { paintMask(s); g.drawImage(maskCanvas, 0, 0, canvas.width, canvas.height); }
    const at = ([x, y]) => [(x + 0.5) * k, (y + 0.5) * k];
    for (const p of polys) {
      const [r, gr, b] = COLOURS[p.type];
      g.strokeStyle = `rgb(${r}, ${gr}, ${b})`;
      g.fillStyle = `rgba(${r}, ${gr}, ${b}, 0.15)`;
      g.lineWidth = 1.5 * dpr;
      g.setLineDash(p.closed ? [] : [6 * dpr, 4 * dpr]);
      g.beginPath();
      p.pts.forEach((xy, j) => { const [u, v] = at(xy); if (j) g.lineTo(u, v); else g.moveTo(u, v); });
      if (!p.closed && p === cur && mouse) g.lineTo(...at(mouse));
      if (p.closed) { g.closePath(); g.fill(); }
      g.stroke();
      g.fillStyle = `rgb(${r}, ${gr}, ${b})`;
      for (const xy of p.pts) { const [u, v] = at(xy); g.fillRect(u - 2 * dpr, v - 2 * dpr, 4 * dpr, 4 * dpr); }
    }
    g.setLineDash([]);
  }

  function drawStrip() {
    const half = Math.floor(STRIP / 2);
    const first = Math.max(0, Math.min(idx - half, list.length - STRIP));
    strip.replaceChildren(...list.slice(first, first + STRIP).map((f, j) => {
      const i = first + j;
      return el("button", { type: "button", class: `thumb ${f.folder}${i === idx ? " current" : ""}`,
        title: `${i + 1}: ${f.folder}/${f.name}${f.polys > 0 ? `, ${f.polys} polygons` : ""}`,
        "data-i": i, onclick: () => run(async () => { await keep(); await show(i); }) },
      el("img", { src: faceUrl(f, "thumb"), alt: f.name, draggable: "false" }),
      f.polys > 0 ? el("span", { class: "dot" }) : null);
    }));
  }

  // -- keys ------------------------------------------------------------------------------
  function onKey(ev) {
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    const key = ev.key.toLowerCase();
    if ((ev.ctrlKey || ev.metaKey) && key === "z") { ev.preventDefault(); run(undoMove); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const step = ev.shiftKey ? 10 : 1;
    const acts = {
      w: () => move("skip"), e: () => move("confirm"), x: save,
      c: () => go(step), q: () => go(-step), z: () => go(-step),
    };
    if (acts[key]) { ev.preventDefault(); run(acts[key]); }
    else if (key === "m") { overlay = !overlay; paint(); }
    else if (key === "n") { netOn = !netOn; paint(); }
    else if (key === "h") { help.hidden = !help.hidden; requestAnimationFrame(paint); }
  }
  document.addEventListener("keydown", onKey);
  const resize = new ResizeObserver(() => paint());
  resize.observe(wrap);
  const beforeUnload = (ev) => { if (dirty()) { ev.preventDefault(); ev.returnValue = ""; } };
  window.addEventListener("beforeunload", beforeUnload);

  const off = onJob((kind, job) => {  // a sort renames faces, an extraction adds some
    if (kind === "end" && ["sort", "extract"].includes(job.stage)) {
      run(async () => {
        try { await keep(); } catch (e) { toast(e.message, "error"); }
        await loadList(face || list[idx]);
        await show(idx);
      });
    }
  });

  sideSel.addEventListener("change", () => run(async () => {
    await keep();
    side = sideSel.value; face = null;
    await loadList(null);
    await show(0);
  }));

  await run(async () => {
    await loadList(null);
    const want = params.get("face");
    const at = want ? list.findIndex((f) => f.name === want) : -1;
    await show(at >= 0 ? at : 0);
  });
  box.dataset.ready = "1";
  return () => {
    alive = false;
    if (dirty()) { save().catch((e) => toast(e.message, "error")); }  // leaving the page: keep the edit
    off(); segmenter.off();
    resize.disconnect();
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("beforeunload", beforeUnload);
  };
}
