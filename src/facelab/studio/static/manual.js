// The manual extraction page: DeepFaceLab's manual extractor. Walk the frames listed in
// aligned_missing.txt (or all frames), draw a box around a face (drag), move it (drag inside),
// resize it around its centre (wheel); the landmarker runs inside the box and its 68 points
// are drawn, each one draggable; Enter saves the face in the automatic format and goes on.
// Clicking a face already on the frame picks it up: the save then replaces it.
// The page's state is mirrored in data- attributes of #manual, for the tests and for CSS.

import { api, el, toast } from "./app.js";

const KEYS = [
  ["Enter", "accept: save the face, next frame"],
  ["Space", "skip to the next frame"],
  ["← / →  or  , / .", "previous / next frame (Shift: ×10)"],
  ["drag", "draw a box; drag inside it to move it"],
  ["wheel", "resize the box around its centre"],
  ["drag a point", "move one landmark"],
  ["click a face", "fix it: the save replaces it"],
  ["Esc", "clear the box"],
  ["H", "hide / show this help"],
];
const DEBOUNCE = 120;  // ms after the last box change before the landmarks are asked for
const GRAB = 6;        // screen px around a point that grab it
const WHEEL = 1.08;    // size factor per wheel notch
// the iBUG 68 points' outlines: [first, last, closed]
const PARTS = [[0, 16, false], [17, 21, false], [22, 26, false], [27, 30, false], [31, 35, false],
  [36, 41, true], [42, 47, true], [48, 59, true], [60, 67, true]];

export async function mount(root) {
  if (!document.querySelector('link[href="/static/manual.css"]')) {
    document.head.append(el("link", { rel: "stylesheet", href: "/static/manual.css" }));
  }
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const st = {
    side: params.get("side") === "src" ? "src" : "dst",
    mode: params.get("mode") === "all" ? "all" : "missing",
    frames: [], missing: [], list: [], k: 0, saved: 0, savedFrames: new Set(),
    name: null, img: null, W: 0, H: 0, faces: [],
    box: null, points: null, model: null, pose: null, replace: null, edited: false,
  };
  let alive = true, loadSeq = 0, timer = null, lmTask = null, again = false, saving = false;
  let drag = null, scale = 1, MIN_BOX = 20;  // frame px, the library's (the listing says)

  const sideSel = el("select", { id: "manual-side", title: "Side" }, ["dst", "src"].map((s) =>
    el("option", { value: s, selected: s === st.side }, `data_${s}`)));
  const modeSel = el("select", { id: "manual-mode", title: "Which frames to walk" },
    el("option", { value: "missing", selected: st.mode === "missing" }, "frames without a face"),
    el("option", { value: "all", selected: st.mode === "all" }, "all frames"));
  const pos = el("span", { id: "manual-pos" });
  const savedBox = el("span", { id: "manual-saved", class: "muted" });
  const goto = el("input", { id: "manual-goto", type: "number", min: "1", title: "Go to frame k" });
  const btn = (id, label, fn, cls) => el("button", { type: "button", id, class: cls,  // blurred:
    onclick: (ev) => { ev.currentTarget.blur(); fn(); } }, label);  // Enter is the page's key
  const canvas = el("canvas", { id: "manual-canvas", tabindex: "0" });
  const help = el("div", { id: "manual-help", class: "manual-help" },
    el("h4", {}, "Keys ", el("span", { class: "muted" }, "(H hides)")),
    el("table", {}, KEYS.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
  const stage = el("div", { class: "manual-stage" }, canvas, help);
  const status = el("div", { id: "manual-status", class: "muted" });
  const facesList = el("ul", { id: "manual-faces", class: "manual-faces" });
  const view = el("div", { class: "manual", id: "manual" },
    el("div", { class: "manual-main" },
      el("div", { class: "toolbar" }, sideSel, modeSel, pos, savedBox, el("span", { class: "spacer" }),
        el("label", { for: "manual-goto", class: "muted" }, "go to"), goto),
      stage),
    el("aside", { class: "side-panel manual-panel" },
      el("div", { class: "manual-buttons" },
        btn("manual-prev", "‹ Prev ,", () => step(-1)),
        btn("manual-next", "Next . ›", () => step(1)),
        btn("manual-skip", "Skip (Space)", () => step(1)),
        btn("manual-accept", "Accept (Enter)", () => accept(), "primary")),
      el("h4", {}, "This frame"), facesList, status,
      el("p", { class: "muted" }, "A face saved here is written exactly like an extracted one " +
        "(detector “manual”), takes the frame off aligned_missing.txt and is kept by a rerun of " +
        "facelab extract.")));
  root.append(view);

  // -- state shown ---------------------------------------------------------------------------
  const r1 = (v) => Math.round(v * 10) / 10;
  function publish() {
    const d = view.dataset;
    Object.assign(d, { side: st.side, mode: st.mode, k: st.k + 1, n: st.list.length,
      frame: st.name || "", saved: st.saved, size: `${st.W},${st.H}`, model: st.model || "",
      box: st.box ? JSON.stringify(st.box.map(r1)) : "", points: st.points ? JSON.stringify(st.points) : "",
      replace: st.replace === null ? "" : st.replace, help: help.hidden ? "hidden" : "shown" });
    pos.textContent = st.list.length
      ? `frame ${st.k + 1} of ${st.list.length} · ${st.name}` +
        (st.savedFrames.has(st.name) ? " ✓" : "")
      : "no frames";
    savedBox.textContent = `saved ${st.saved}` +
      (st.mode === "missing" ? ` · ${st.missing.length - st.saved} left` : "");
    facesList.replaceChildren(...(st.faces.length ? st.faces.map((f) => el("li", {
      class: st.replace === f.index ? "fixing" : "", onclick: () => pick(f) },
      `face ${f.index} · ${f.detector} · yaw ${f.yaw}`)) : [el("li", { class: "muted" }, "no face")]));
    status.textContent = !st.box ? "Drag a box around the face."
      : !st.points || d.pending === "1" ? "Finding the landmarks…"
        : st.model === "mean" ? "No face found in the box: the mean face is placed; drag its points or move the box."
          : `Landmarks: ${st.model}${st.pose ? `, yaw ${st.pose[0]} pitch ${st.pose[1]}` : ""}` +
            (st.edited ? " (points moved)" : "") +
            (st.replace !== null ? ` · Enter replaces face ${st.replace}` : " · Enter saves a new face");
  }

  // -- drawing -------------------------------------------------------------------------------
  function fit() {
    if (!st.W) return;
    const dpr = window.devicePixelRatio || 1;
    scale = Math.max(0.1, Math.min((stage.clientWidth - 2) / st.W, (stage.clientHeight - 2) / st.H, 4));
    Object.assign(canvas.style, { width: `${Math.round(st.W * scale)}px`, height: `${Math.round(st.H * scale)}px` });
    canvas.width = Math.round(st.W * scale * dpr);
    canvas.height = Math.round(st.H * scale * dpr);
    draw();
  }

  function outline(g, pts, color, radius) {
    g.strokeStyle = color; g.fillStyle = color;
    for (const [a, b, closed] of PARTS) {
      g.beginPath();
      for (let i = a; i <= b; i++) g[i === a ? "moveTo" : "lineTo"](pts[i][0], pts[i][1]);
      if (closed) g.closePath();
      g.stroke();
    }
    for (const [x, y] of pts) { g.beginPath(); g.arc(x, y, radius, 0, 2 * Math.PI); g.fill(); }
  }

  function draw() {
    const g = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, canvas.width, canvas.height);
    if (!st.img) return;
    g.setTransform(dpr * scale, 0, 0, dpr * scale, 0, 0);
    g.drawImage(st.img, 0, 0, st.W, st.H);
    const px = 1 / scale;
    g.lineWidth = 1.5 * px;
    g.font = `${12 * px}px system-ui`;
    for (const f of st.faces.filter((x) => x.index !== st.replace)) {  // the frame's faces
      const [x0, y0, x1, y1] = f.box;
      g.lineWidth = 1.5 * px; g.strokeStyle = g.fillStyle = "#3fb950";
      g.strokeRect(x0, y0, x1 - x0, y1 - y0);
      g.fillText(`face ${f.index} · ${f.detector}`, x0, y0 - 4 * px);
      g.lineWidth = px;
      outline(g, f.points, "rgba(63,185,80,.8)", 1.2 * px);
    }
    if (st.box) {  // the box being placed: dashed while its landmarks are asked for
      const [x0, y0, x1, y1] = st.box;
      g.setLineDash(view.dataset.pending === "1" ? [6 * px, 4 * px] : []);
      g.strokeStyle = "#4c9ffe"; g.lineWidth = 2 * px;
      g.strokeRect(x0, y0, x1 - x0, y1 - y0);
      g.setLineDash([]);
    }
    g.lineWidth = px;
    if (st.points) outline(g, st.points, st.model === "mean" ? "#d29922" : "#ffd33d", 2 * px);
  }

  // -- landmarks for the box (debounced, one request in flight) -----------------------------
  function usable(b) {
    if (!b || b[2] - b[0] < MIN_BOX || b[3] - b[1] < MIN_BOX) return false;
    const w = Math.max(0, Math.min(b[2], st.W) - Math.max(b[0], 0));
    const h = Math.max(0, Math.min(b[3], st.H) - Math.max(b[1], 0));
    return w * h >= 0.5 * (b[2] - b[0]) * (b[3] - b[1]);
  }

  // the points follow the box at once (moved and scaled with it) until the landmarker's come
  function boxChanged(prev) {
    const b = st.box, ok = usable(b);
    st.points = ok && prev && st.points ? st.points.map(([x, y]) => [
      r1(b[0] + (x - prev[0]) * (b[2] - b[0]) / (prev[2] - prev[0])),
      r1(b[1] + (y - prev[1]) * (b[3] - b[1]) / (prev[3] - prev[1]))]) : null;
    st.edited = false;
    clearTimeout(timer);
    timer = ok ? setTimeout(() => { timer = null; landmarks(); }, DEBOUNCE) : null;
    view.dataset.pending = timer ? "1" : "0";
    draw(); publish();
  }

  function landmarks() {
    if (lmTask) { again = true; return lmTask; }
    if (!usable(st.box)) { view.dataset.pending = "0"; return Promise.resolve(); }
    const sent = st.box.slice(), frame = st.name, side = st.side;
    view.dataset.pending = "1";
    lmTask = (async () => {
      try {
        const r = await api(`/api/manual/${side}/landmarks`, { method: "POST", body: { frame, box: sent } });
        if (alive && frame === st.name && side === st.side && st.box && !again && !st.edited &&
            st.box.every((v, i) => v === sent[i])) {  // still the box asked about, no point moved
          st.points = r.points; st.model = r.model; st.pose = [r.yaw, r.pitch];
        }
      } catch (e) {
        if (alive) { status.textContent = e.message; toast(e.message, "error"); }
      } finally {
        lmTask = null;
        if (again && alive) { again = false; landmarks(); } else if (!timer) {
          view.dataset.pending = "0"; draw(); publish();
        }
      }
    })();
    return lmTask;
  }

  async function settled() {
    if (timer) { clearTimeout(timer); timer = null; landmarks(); }
    while (lmTask) await lmTask;
  }

  // -- frames --------------------------------------------------------------------------------
  function clearFace() {
    clearTimeout(timer); timer = null;
    st.box = null; st.points = null; st.model = null; st.pose = null; st.replace = null; st.edited = false;
    view.dataset.pending = "0";
  }

  async function show(k) {
    if (!st.list.length) {
      st.name = null; st.img = null; st.faces = []; clearFace(); draw(); publish();
      status.textContent = `data_${st.side} has no frames yet: extract them on the Workspace page (video extract ${st.side}).`;
      view.dataset.loaded = "1";
      return;
    }
    st.k = Math.max(0, Math.min(st.list.length - 1, k));
    st.name = st.list[st.k];
    clearFace();
    const seq = ++loadSeq, side = st.side, name = st.name;
    view.dataset.loaded = "0";
    history.replaceState(null, "", `#/manual?side=${side}&mode=${st.mode}&frame=${encodeURIComponent(name)}`);
    publish();
    const q = encodeURIComponent(name);
    const img = new Image();
    img.src = `/api/manual/${side}/frame/${q}`;
    try {
      const [info] = await Promise.all([api(`/api/manual/${side}/faces/${q}`), img.decode()]);
      if (seq !== loadSeq || !alive) return;
      st.img = img; st.W = info.width; st.H = info.height; st.faces = info.faces;
      fit(); publish();
      view.dataset.loaded = "1";
    } catch (e) {
      if (seq === loadSeq && alive) toast(e.message || `${name} could not be shown.`, "error");
    }
  }

  function step(d) {
    if (!st.list.length || saving) return;
    const k = Math.max(0, Math.min(st.list.length - 1, st.k + d));
    if (k === st.k) { toast(d > 0 ? "This is the last frame." : "This is the first frame."); return; }
    show(k);
  }

  async function accept() {
    if (saving || !st.name) return;
    if (!st.box) { step(1); return; }  // nothing placed: the frame stays without a face
    saving = true;
    try {
      await settled();
      if (!st.points) throw new Error(`The box has no landmarks yet: make it at least ${MIN_BOX}×${MIN_BOX} around the face.`);
      const r = await api(`/api/manual/${st.side}/save`, { method: "POST",
        body: { frame: st.name, points: st.points, replace: st.replace } });
      if (!st.savedFrames.has(r.frame)) { st.savedFrames.add(r.frame); st.saved += 1; }
      st.faces = r.faces;
      toast(`Saved ${r.file}${r.replaced !== null ? ` (face ${r.replaced} replaced, the old one is in aligned_trash)` : ""}.`);
      clearFace(); publish();
      if (st.k < st.list.length - 1) await show(st.k + 1); else { draw(); publish(); toast("That was the last frame."); }
    } catch (e) { toast(e.message, "error"); } finally { saving = false; }
  }

  function pick(f) {
    clearFace();
    st.replace = f.index; st.box = f.box.slice(); st.points = f.points.map((p) => p.slice());
    st.model = f.detector; st.pose = [f.yaw, f.pitch];
    draw(); publish();
  }

  async function load(keepName) {
    const data = await api(`/api/manual/${st.side}/frames`);
    if (!alive) return;
    st.frames = data.frames; st.missing = data.missing; MIN_BOX = data.min_box;
    st.saved = 0; st.savedFrames.clear();
    if (st.mode === "missing" && !st.missing.length && st.frames.length) {
      toast(data.extracted ? `No frame of data_${st.side} is listed without a face: showing all frames.`
        : `The faces of data_${st.side} are not extracted yet: showing all frames.`);
      st.mode = "all"; modeSel.value = "all";
    }
    st.list = st.mode === "missing" ? st.missing.slice() : st.frames.slice();
    goto.max = String(st.list.length);
    const at = keepName ? st.list.indexOf(keepName) : -1;
    await show(at >= 0 ? at : 0);
  }

  // -- the mouse -----------------------------------------------------------------------------
  function at(ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * st.W / r.width, (ev.clientY - r.top) * st.H / r.height];
  }
  const inBox = (b, [x, y]) => b && x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3];

  canvas.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || !st.img) return;
    ev.preventDefault();
    canvas.focus();
    const p = at(ev);
    if (st.points) {
      let best = -1, dist = GRAB / scale;
      st.points.forEach(([x, y], i) => {
        const d = Math.hypot(x - p[0], y - p[1]);
        if (d < dist) { dist = d; best = i; }
      });
      if (best >= 0) { drag = { kind: "point", i: best }; return; }
    }
    if (inBox(st.box, p)) drag = { kind: "move", from: p, box: st.box.slice() };
    else drag = { kind: "press", from: p, screen: [ev.clientX, ev.clientY] };
  });

  function onMove(ev) {
    if (!drag) return;
    const p = at(ev);
    if (drag.kind === "point") {
      st.points[drag.i] = [r1(p[0]), r1(p[1])]; st.edited = true;
      draw();
    } else if (drag.kind === "move") {
      const dx = p[0] - drag.from[0], dy = p[1] - drag.from[1], b = drag.box, prev = st.box;
      st.box = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy];
      boxChanged(prev);
    } else if (drag.kind === "press" &&
        Math.hypot(ev.clientX - drag.screen[0], ev.clientY - drag.screen[1]) > 3) {
      drag = { kind: "draw", from: drag.from };
      clearFace();
    }
    if (drag.kind === "draw") {
      const [ax, ay] = drag.from;
      st.box = [Math.min(ax, p[0]), Math.min(ay, p[1]), Math.max(ax, p[0]), Math.max(ay, p[1])];
      boxChanged();
    }
  }

  function onUp() {
    if (!drag) return;
    const was = drag;
    drag = null;
    if (was.kind === "point") publish();
    if (was.kind === "press") {  // a click: pick up a face of the frame to fix it
      const face = st.faces.find((f) => inBox(f.box, was.from));
      if (face) pick(face);
    }
  }
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);

  canvas.addEventListener("wheel", (ev) => {
    if (!st.box) return;
    ev.preventDefault();
    // one notch (100 px, or 3 lines) is one step; a touchpad's small deltas are fractions
    const dy = ev.deltaMode === 1 ? ev.deltaY * 33 : ev.deltaMode === 2 ? ev.deltaY * 300 : ev.deltaY;
    const f = WHEEL ** Math.max(-5, Math.min(5, -dy / 100));
    const [x0, y0, x1, y1] = st.box, cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const hw = (x1 - x0) * f / 2, hh = (y1 - y0) * f / 2;
    if (2 * Math.min(hw, hh) < MIN_BOX && f < 1) return;  // not smaller than a face can be
    const prev = st.box;
    st.box = [cx - hw, cy - hh, cx + hw, cy + hh];
    boxChanged(prev);
  }, { passive: false });

  // -- the keys (DeepFaceLab's) --------------------------------------------------------------
  function onKey(ev) {
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const n = ev.shiftKey ? 10 : 1;
    const key = ev.key;
    if (key === "Enter") accept();
    else if (key === " ") step(1);
    else if (key === "ArrowRight" || key === "." || key === ">") step(n);
    else if (key === "ArrowLeft" || key === "," || key === "<") step(-n);
    else if (key === "h" || key === "H") { help.hidden = !help.hidden; publish(); }
    else if (key === "Escape") { clearFace(); draw(); publish(); }
    else return;
    ev.preventDefault();
  }
  document.addEventListener("keydown", onKey);

  sideSel.addEventListener("change", () => {
    st.side = sideSel.value;
    load(null).catch((e) => toast(e.message, "error"));
  });
  modeSel.addEventListener("change", () => {
    st.mode = modeSel.value;
    load(st.name).catch((e) => toast(e.message, "error"));
  });
  goto.addEventListener("change", () => {
    const k = Number(goto.value);
    if (Number.isInteger(k) && k >= 1 && k <= st.list.length) { show(k - 1); canvas.focus(); }
  });
  const resize = new ResizeObserver(() => fit());
  resize.observe(stage);

  try { await load(params.get("frame")); } catch (e) {
    status.textContent = e.message; toast(e.message, "error");
  }
  view.dataset.ready = "1";
  return () => {
    alive = false; clearTimeout(timer); resize.disconnect();
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("mousemove", onMove);
    window.removeEventListener("mouseup", onUp);
  };
}
