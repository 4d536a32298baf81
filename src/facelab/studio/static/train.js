// The training page: start a run with the train form, watch its preview and loss graph
// update live, its speed and ETA; DeepFaceLab's keys: Enter save and stop, S save now,
// P preview now, Space next view (preview grid, preview history, whole loss graph).
// Live data comes from polling /api/train/state: the save's loss history only when the
// save changed, the job's live points only since the last poll.

import { api, el, jobs, onJob, stageForm, toast } from "./app.js";

const VIEWS = { grid: "preview grid", history: "preview history", loss: "loss graph" };
const POLL_LIVE = 1000;   // ms between polls while this model trains
const POLL_IDLE = 4000;   // otherwise
const KEEP_LIVE = 5000;   // live points kept
const RECENT = 300;       // points in the small graph
const COLORS = ["#f28e2b", "#4c9ffe"];  // src, dst (the preview plot's orange and blue)

function addStyle() {
  if (!document.querySelector('link[href="/static/train.css"]')) {
    document.head.append(el("link", { rel: "stylesheet", href: "/static/train.css" }));
  }
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function ago(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function fmtLoss(v) { return v === null || v === undefined ? "–" : v.toFixed(4); }

/** Draw src and dst loss against iteration in `canvas`; returns the points drawn. */
function drawLoss(canvas, points, labels) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(50, canvas.clientWidth), h = Math.max(50, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const line = css.getPropertyValue("--line").trim() || "#333";
  const muted = css.getPropertyValue("--muted").trim() || "#999";
  g.font = "11px system-ui, sans-serif";
  canvas.dataset.points = String(points.length);
  if (!points.length) {
    g.fillStyle = muted; g.fillText("no losses yet", 10, h / 2);
    return 0;
  }
  const L = 46, R = 8, T = 8, B = 18;
  const x0 = points[0][0], x1 = Math.max(points[points.length - 1][0], x0 + 1);
  let lo = Infinity, hi = -Infinity;
  const series = labels.length > 1 ? [1, 2] : [1];
  for (const p of points) for (const k of series) {
    if (p[k] !== null) { lo = Math.min(lo, p[k]); hi = Math.max(hi, p[k]); }
  }
  if (!(hi > lo)) { hi = lo + 1e-3; lo -= 1e-3; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const X = (it) => L + (it - x0) / (x1 - x0) * (w - L - R);
  const Y = (v) => T + (hi - v) / (hi - lo) * (h - T - B);
  g.strokeStyle = line; g.fillStyle = muted; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, y = Math.round(Y(v)) + 0.5;
    g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
    g.fillText(v.toFixed(3), 2, y + 4);
  }
  g.fillText(String(x0), L, h - 4);
  const last = String(points[points.length - 1][0]);
  g.fillText(last, w - R - g.measureText(last).width, h - 4);
  series.forEach((k, n) => {
    g.strokeStyle = COLORS[n]; g.lineWidth = 1.25; g.beginPath();
    let pen = false;
    for (const p of points) {
      if (p[k] === null) { pen = false; continue; }
      if (pen) g.lineTo(X(p[0]), Y(p[k])); else { g.moveTo(X(p[0]), Y(p[k])); pen = true; }
    }
    g.stroke();
    g.fillStyle = COLORS[n];
    g.fillText(labels[n] || "", w - R - 40, T + 12 + 13 * n);
  });
  return points.length;
}

export async function mount(root) {
  addStyle();
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let model = params.get("model") || "";
  let history = [], historyVersion = "", live = [], liveJob = 0, liveFrom = 0;
  let labels = ["src", "dst"], view = "grid", st = null, timer = null, alive = true;
  let shownVersion = { grid: "", history: "" }, prompted = false;

  const modelSel = el("select", { id: "tr-model", title: "Model" });
  const btn = (id, text, title, fn) => el("button", { type: "button", id, title,
    onclick: (e) => { e.currentTarget.blur(); fn(); } }, text);
  const trainBtn = btn("tr-train", "Train…", "Start or resume training with the train form", () => openForm());
  const stopBtn = btn("tr-stop", "Stop (Enter)", "Save and stop", () => stop());
  const saveBtn = btn("tr-save", "Save (S)", "Save now and go on training", () => request("save"));
  const prevBtn = btn("tr-preview", "Preview (P)", "Write the preview now", () => request("preview"));
  const viewBtn = btn("tr-next-view", "View (Space)", "Next view: preview grid, history, loss graph", () => nextView());
  stopBtn.classList.add("danger");
  const badge = el("span", { id: "tr-state", class: "badge" }, "idle");
  const stat = (id, label) => el("div", { class: "tr-stat" }, el("div", { class: "muted" }, label),
    el("div", { id, class: "tr-value" }, "–"));
  const stats = el("div", { class: "tr-stats" }, stat("tr-iteration", "iteration"),
    stat("tr-speed", "speed"), stat("tr-eta", "ETA to target"), stat("tr-saved", "last save"),
    stat("tr-losses", "losses"));
  const formSlot = el("div", { id: "tr-form" });
  const image = el("img", { id: "tr-image", alt: "" });
  const bigLoss = el("canvas", { id: "tr-loss-all", class: "tr-loss-all" });
  const caption = el("div", { id: "tr-caption", class: "muted" });
  const viewBox = el("div", { id: "tr-view", class: "tr-view", "data-kind": view }, image, bigLoss);
  const loss = el("canvas", { id: "tr-loss", class: "tr-loss" });
  const note = el("p", { id: "tr-note", class: "muted" });
  root.append(el("div", { class: "train" },
    el("div", { class: "toolbar" }, el("label", { for: "tr-model", class: "muted" }, "Model"),
      modelSel, trainBtn, el("span", { class: "spacer" }), badge, stopBtn, saveBtn, prevBtn, viewBtn),
    formSlot, stats,
    el("div", { class: "tr-body" },
      el("section", { class: "tr-left" }, viewBox, caption),
      el("section", { class: "tr-right" }, el("h4", {}, "Loss, recent"), loss, note,
        el("p", { class: "muted tr-keys" }, el("kbd", {}, "Enter"), " save and stop · ",
          el("kbd", {}, "S"), " save now · ", el("kbd", {}, "P"), " preview now · ",
          el("kbd", {}, "Space"), " next view")))));

  const training = () => st && st.job && st.job.state === "running" && st.job.model
    && st.job.model === st.model;

  async function openForm() {
    try {
      const initial = model ? { model_name: model } : {};
      const form = await stageForm("train", initial, {
        onStarted: (job) => { toast(`Started: ${job.command}`); poll(); },
      });
      formSlot.replaceChildren(form);
      const first = form.querySelector("input, select");
      if (first) first.focus();
    } catch (e) { toast(e.message, "error"); }
  }

  async function stop() {
    if (!training()) { toast("No training of this model is running.", "error"); return; }
    try { await jobs.cancel(); toast("Saving and stopping…"); } catch (e) { toast(e.message, "error"); }
    poll();
  }

  async function request(what) {
    if (!training()) { toast("No training of this model is running.", "error"); return; }
    try {
      await api("/api/train/request", { method: "POST", body: { request: what } });
      toast(what === "save" ? "Saving at the end of this iteration…" : "Writing the preview…");
    } catch (e) { toast(e.message, "error"); }
  }

  function views() {
    const have = ["grid"];
    if (st && st.history_image) have.push("history");
    have.push("loss");
    return have;
  }

  function nextView() {
    const have = views();
    view = have[(have.indexOf(view) + 1) % have.length];
    render();
  }

  // the save's history (a point every 25 iterations) up to where this run's live points
  // (one per status line, denser) begin, then those
  function points() {
    if (!live.length) return history;
    const first = live[0][0];
    return history.filter((p) => p[0] < first).concat(live);
  }

  function addLive(data) {
    if (data.job !== liveJob) { live = []; liveJob = data.job; }
    for (const [, it, s, d] of data.points) {
      while (live.length && live[live.length - 1][0] >= it) live.pop();  // a rollback
      live.push([it, s, d]);
    }
    if (live.length > KEEP_LIVE) live.splice(0, live.length - KEEP_LIVE);
    liveFrom = data.next;
  }

  function showImage(kind) {
    const src = kind === "grid" ? st.preview : st.history_image;
    if (!src) {
      image.removeAttribute("src"); image.hidden = true;
      delete image.dataset.version;
      caption.textContent = kind === "grid" ? "No preview yet: P writes one while training."
        : "No preview history (the model's --preview-history is off).";
      return;
    }
    image.hidden = false;
    if (shownVersion[kind] !== src.version || image.dataset.kind !== kind) {
      image.src = src.url; image.dataset.version = src.version; image.dataset.kind = kind;
      shownVersion[kind] = src.version;
    }
    caption.textContent = kind === "grid"
      ? "Rows: src, src→src, dst, dst→dst, dst→src; the saved loss history under them."
      : `Iteration ${src.iteration} (${src.count} history images): src, src→src, dst, dst→dst, dst→src.`;
  }

  function render() {
    if (!st) return;
    if (!views().includes(view)) view = "grid";
    viewBox.dataset.kind = view;
    viewBtn.textContent = `View: ${VIEWS[view]} (Space)`;
    const all = points();
    if (view === "loss") {
      image.hidden = true;
      bigLoss.hidden = false;
      drawLoss(bigLoss, all, labels);
      caption.textContent = `Loss over the whole run (${all.length} points).`;
    } else {
      bigLoss.hidden = true;
      showImage(view);
    }
    drawLoss(loss, all.slice(-RECENT), labels);
  }

  function showStats() {
    const saved = st.saved, status = training() && st.live ? st.live.status : null;
    const job = st.job && st.job.model === st.model ? st.job : null;
    const running = training();
    badge.textContent = running ? (job.cancelling ? "stopping" : "training") : job ? job.state : "idle";
    badge.className = "badge " + (running ? "running" : job ? job.state : "");
    const it = status ? status.iteration : saved ? saved.iteration : null;
    const target = running && st.job.target !== null ? st.job.target : saved ? saved.target : null;
    const itBox = document.getElementById("tr-iteration");
    itBox.textContent = it === null ? "–" : `${it}${target ? ` of ${target}` : ""}`;
    itBox.dataset.value = it === null ? "" : String(it);
    const speed = document.getElementById("tr-speed");
    speed.textContent = status && status.ms > 0
      ? `${(1000 / status.ms).toFixed(status.ms > 1000 ? 2 : 1)} it/s (${status.ms} ms/iter)` : "–";
    document.getElementById("tr-eta").textContent = status
      ? (status.eta || (target ? "–" : "no target")) : target ? "–" : "no target";
    const savedBox = document.getElementById("tr-saved");
    savedBox.textContent = saved && saved.saved_at
      ? `iteration ${saved.iteration}, ${ago(saved.saved_at)}` : "not saved yet";
    savedBox.title = saved && saved.saved_at ? `saved at ${clock(saved.saved_at)}` : "";
    savedBox.dataset.iteration = saved ? String(saved.iteration) : "";
    if (status) labels = status.labels.length > 1 ? status.labels : [status.labels[0]];
    else if (saved && saved.family === "meshswap") labels = ["refiner"];
    else labels = ["src", "dst"];
    const lastHist = history.length ? history[history.length - 1] : null;
    const values = status ? status.losses : lastHist ? lastHist.slice(1, 1 + labels.length) : null;
    document.getElementById("tr-losses").textContent = values
      ? labels.map((l, i) => `${l} ${fmtLoss(values[i])}`).join("  ") : "–";
    const ready = running && st.job.ready && !job.cancelling;
    stopBtn.disabled = !running || job.cancelling;
    saveBtn.disabled = !ready;
    prevBtn.disabled = !ready;
    note.textContent = saved ? `${saved.preset || saved.family}, resolution ${saved.resolution ?? "?"}, `
      + `batch ${saved.batch ?? "?"}` : running ? "The model's first save comes with S or on stopping." : "";
  }

  function showModels() {
    const names = new Set(st.models);
    if (st.model) names.add(st.model);
    const want = [...names].sort();
    const have = [...modelSel.options].map((o) => o.value);
    if (want.join("\n") !== have.join("\n")) {
      modelSel.replaceChildren(...want.map((n) => el("option", { value: n }, n)));
    }
    modelSel.value = st.model;
    modelSel.hidden = !want.length;
  }

  async function poll() {
    clearTimeout(timer);
    if (!alive) return;
    try {
      const q = new URLSearchParams({ model, history: historyVersion, from: liveFrom, job: liveJob });
      const data = await api(`/api/train/state?${q}`);
      if (!alive) return;
      if (data.model !== (st && st.model)) { history = []; historyVersion = ""; live = []; liveJob = 0; liveFrom = 0; }
      st = data;
      model = data.model;
      if (data.history) { history = data.history; historyVersion = data.saved.version; }
      if (data.live) addLive(data.live);
      showModels();
      showStats();
      render();
      if (!data.models.length && !data.job && !prompted) {
        prompted = true;
        openForm();
        toast("No model yet: the train form creates one.");
      }
      root.dataset.loaded = String(Date.now());
    } catch (e) {
      if (alive) toast(e.message, "error");
    }
    if (alive) timer = setTimeout(poll, training() ? POLL_LIVE : POLL_IDLE);
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t instanceof Element && t.closest("input, select, textarea, form, [contenteditable]")) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    const action = { Enter: stop, s: () => request("save"), p: () => request("preview"),
      " ": nextView }[key];
    if (!action) return;
    e.preventDefault();
    action();
  }

  modelSel.addEventListener("change", () => { model = modelSel.value; st = null; poll(); });
  document.addEventListener("keydown", onKey);
  const resize = new ResizeObserver(() => render());
  resize.observe(loss);
  const off = onJob((kind) => { if (kind === "start" || kind === "end") poll(); });
  await poll();
  return () => {
    alive = false; clearTimeout(timer); off(); resize.disconnect();
    document.removeEventListener("keydown", onKey);
  };
}
