// The merge page: DeepFaceLab's interactive merger. One dst frame merged by the model the
// server keeps loaded, again on every option change (debounced; only the latest request
// counts), the controls generated from MergeOptions' declarations, frame ranges with their
// own options (data_dst/merge.json, read by `facelab merge`), "merge all" as a job, and the
// result playing beside dst with what `facelab verify` finds in it.

import { api, el, jobs, onJob, toast, verdictText } from "./app.js";

const DEBOUNCE_MS = 40;
// DeepFaceLab's merger keys: option → [increase, decrease, step]
const STEP_KEYS = { erode: ["w", "s", 5], blur: ["e", "d", 5], face_scale: ["u", "j", 1],
  degrade: ["o", "l", 5], color_degrade: ["p", ";", 5], hist_threshold: ["i", "k", 5] };
const CYCLE_KEYS = { c: "color", x: "mask", n: "super_resolution" };
const HELP = [
  [", .  ← →", "previous / next frame (Shift: 10)"], ["Home End", "first / last frame"],
  ["Tab", "merged / dst original"], ["1–7", "mode"],
  ...Object.entries(STEP_KEYS).map(([name, [up, down]]) => [`${up.toUpperCase()} / ${down.toUpperCase()}`, `${name.replace("_", " ")} + / −`]),
  ...Object.entries(CYCLE_KEYS).map(([k, name]) => [k.toUpperCase(), `next ${name.replace("_", " ")}`]),
  ["[  ]", "range starts / ends at this frame"], ["A", "apply the options to the range"],
  ["R", "reset the options"], ["H", "hide this help"],
];

function describe(options, fields) {
  const changed = fields.filter((f) => f.name in options && options[f.name] !== f.default);
  return changed.map((f) => `${f.name.replace("_", " ")} ${options[f.name]}`).join(", ") || "the defaults";
}

export async function mount(root, studio) {
  if (!document.querySelector('link[href="/static/merge.css"]')) {
    document.head.append(el("link", { rel: "stylesheet", href: "/static/merge.css" }));
  }
  const [setup, { fields }] = await Promise.all([api("/api/merge/setup"), api("/api/merge/options")]);
  const frames = setup.frames;
  let index = 0, showDst = false, seq = 0, timer = null, inflight = null, url = null, alive = true;
  const client = Math.random().toString(36).slice(2, 10);
  let ranges = [];

  // -- the view --------------------------------------------------------------------------
  const modelSel = el("select", { id: "merge-model", title: "Model" },
    setup.models.map((m) => el("option", { value: m.name }, `${m.name}${m.iteration != null ? ` · it. ${m.iteration}` : ""}`)));
  const outputSel = el("select", { id: "merge-output", title: "What merge all writes: result.mp4, or data_dst/merged/*.png (the preview follows its prediction batches)" },
    el("option", { value: "video", selected: setup.output === "video" }, "to video"),
    el("option", { value: "frames", selected: setup.output === "frames" }, "to frames"));
  const slider = el("input", { id: "merge-slider", type: "range", min: 0, max: Math.max(0, frames.length - 1), value: 0 });
  const number = el("input", { id: "merge-frame", type: "number", min: frames[0], max: frames[frames.length - 1], value: frames[0] });
  const count = el("span", { class: "muted" }, `of ${frames.length}`);
  const dstBtn = el("button", { type: "button", id: "merge-toggle", title: "Tab" }, "dst original");
  const timing = el("span", { id: "merge-time", class: "muted" });
  const view = el("img", { id: "merge-view", alt: "merged frame" });
  const dstView = el("img", { id: "merge-dst", alt: "dst frame", hidden: true });
  const note = el("div", { id: "merge-note", class: "merge-note" });
  const ignore = el("input", { id: "merge-ignore", type: "checkbox" });
  const controls = el("div", { id: "merge-controls", class: "merge-controls" });
  const first = el("input", { id: "range-first", type: "number", min: 0, value: frames[0] });
  const last = el("input", { id: "range-last", type: "number", min: 0, value: frames[frames.length - 1] });
  const rangeList = el("ul", { id: "range-list", class: "range-list" });
  const workers = el("input", { id: "merge-workers", type: "number", min: 1, placeholder: "measured", title: "Processes (blank: the split measured fastest)" });
  const resultBox = el("div", { id: "merge-result", class: "merge-result" });
  const help = el("dl", { id: "merge-help", class: "merge-help" }, HELP.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  root.append(el("div", { class: "merge" },
    el("div", { class: "merge-main" },
      el("div", { class: "toolbar" }, modelSel, outputSel, el("button", { type: "button", id: "merge-prev", title: ",", onclick: () => go(index - 1) }, "‹"),
        slider, el("button", { type: "button", id: "merge-next", title: ".", onclick: () => go(index + 1) }, "›"),
        number, count, dstBtn),
      el("div", { class: "merge-stage" }, view, dstView, timing), note, resultBox),
    el("aside", { class: "merge-side" },
      el("h3", {}, "Options ", el("button", { type: "button", id: "merge-reset", title: "R", onclick: () => reset() }, "Reset")),
      controls,
      el("label", { class: "check" }, ignore, " preview without the ranges"),
      el("h3", {}, "Frame ranges"),
      el("div", { class: "range-form" }, "frames ", first, " – ", last,
        el("button", { type: "button", id: "range-apply", title: "A", onclick: () => applyRange() }, "Apply to frames")),
      rangeList,
      el("h3", {}, "Merge all"),
      el("div", { class: "range-form" }, "processes ", workers,
        el("button", { type: "button", id: "merge-all", class: "primary", onclick: () => mergeAll() }, "Merge all")),
      help)));

  // -- the controls, from the declarations ------------------------------------------------
  const inputs = new Map();
  for (const f of fields) {
    const id = `opt-${f.name}`;
    let input, shown = null;
    if (f.kind === "choice") {
      input = el("select", { id, name: f.name }, f.choices.map((c) => el("option", { value: c }, c)));
    } else if (f.kind === "bool") {
      input = el("input", { id, name: f.name, type: "checkbox" });
    } else {
      const [lo, hi] = f.range || [null, null];
      const bounded = lo !== null && hi !== null;
      input = el("input", { id, name: f.name, type: bounded ? "range" : "number", min: lo ?? undefined, max: hi ?? undefined,
        step: f.kind === "int" ? (f.step || 1) : "any" });
      shown = el("output", { for: id, class: "value" });
    }
    const row = el("div", { class: "opt", "data-name": f.name, title: `${f.help}${f.allowed ? ` (${f.allowed})` : ""}` },
      el("label", { for: id }, f.label), input, shown);
    inputs.set(f.name, { f, input, shown });
    input.addEventListener("input", () => { sync(f.name); schedule(); });
    controls.append(row);
  }

  function value(name) {
    const { f, input } = inputs.get(name);
    if (f.kind === "bool") return input.checked;
    if (f.kind === "int" || f.kind === "float") return Number(input.value);
    return input.value;
  }
  function setValue(name, v) {
    const { f, input } = inputs.get(name);
    if (f.kind === "bool") input.checked = Boolean(v); else input.value = v;
    sync(name);
  }
  function sync(name) {
    const { shown } = inputs.get(name);
    if (shown) shown.textContent = String(value(name));
  }
  function options() { return Object.fromEntries([...inputs.keys()].map((n) => [n, value(n)])); }
  function reset() { for (const { f } of inputs.values()) setValue(f.name, f.default); schedule(); }

  // -- rendering ------------------------------------------------------------------------
  function frameNo() { return frames[index]; }
  function rangeOf(n) { return ranges.find((r) => r.first <= n && n <= r.last) || null; }

  function schedule() { clearTimeout(timer); timer = setTimeout(render, DEBOUNCE_MS); }

  async function render() {
    if (!frames.length || !modelSel.value) return;
    const my = ++seq;
    const n = frameNo();
    if (inflight) inflight.abort();
    const ctrl = new AbortController();
    inflight = ctrl;
    const params = new URLSearchParams({ model: modelSel.value, output: outputSel.value, frame: n,
      ranges: ignore.checked ? "0" : "1", seq: my, client });
    for (const [k, v] of Object.entries(options())) params.set(k, String(v));
    const t0 = performance.now();
    timing.classList.add("busy");
    let res, blob;
    try {
      res = await fetch(`/api/merge/preview?${params}`, { signal: ctrl.signal, credentials: "same-origin" });
      if (res.status === 204 || my !== seq) return;  // a newer request took its place
      if (!res.ok) {
        let msg = `${res.status}`;
        try { msg = (await res.json()).error || msg; } catch { /* not JSON */ }
        if (my === seq) { note.textContent = msg; note.className = "merge-note bad"; timing.classList.remove("busy"); }
        return;
      }
      blob = await res.blob();
    } catch (e) {
      if (e.name !== "AbortError") { toast(e.message, "error"); timing.classList.remove("busy"); }
      return;
    }
    if (my !== seq || !alive) return;
    const total = performance.now() - t0;
    timing.classList.remove("busy");
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(blob);
    view.src = url;
    view.dataset.frame = String(n);
    view.dataset.seq = String(my);
    view.dataset.query = params.toString();
    view.dataset.ms = String(Math.round(total));
    timing.textContent = `${Math.round(total)} ms (merge ${Math.round(Number(res.headers.get("x-render-ms")))} ms)`;
    const inRange = res.headers.get("x-range");
    note.className = "merge-note";
    note.replaceChildren(inRange ? el("span", {}, `Frame ${n} is in range ${inRange}, merged with its own options`,
      ignore.checked ? " (not shown: previewing without the ranges)" : "", " ",
      el("button", { type: "button", onclick: () => editRange(rangeOf(n)) }, "Edit them")) : "");
  }

  function go(i) {
    index = Math.max(0, Math.min(frames.length - 1, i));
    slider.value = String(index);
    number.value = String(frameNo());
    if (showDst) dstView.src = `/api/merge/dst?frame=${frameNo()}`;
    schedule();
  }

  function toggleDst() {
    showDst = !showDst;
    if (showDst) dstView.src = `/api/merge/dst?frame=${frameNo()}`;
    dstView.hidden = !showDst;
    view.hidden = showDst;
    dstBtn.classList.toggle("active", showDst);
    dstBtn.textContent = showDst ? "merged" : "dst original";
  }

  // -- ranges ---------------------------------------------------------------------------
  function drawRanges() {
    rangeList.replaceChildren(...ranges.map((r) => el("li", { "data-first": r.first, "data-last": r.last },
      el("a", { href: "#/merge", onclick: (e) => { e.preventDefault(); go(frames.indexOf(r.first)); } }, `${r.first}–${r.last}`),
      el("span", { class: "muted" }, describe(r.options, fields)),
      el("button", { type: "button", class: "edit", onclick: () => editRange(r) }, "Edit"),
      el("button", { type: "button", class: "remove", onclick: () => removeRange(r) }, "Remove"))));
    if (!ranges.length) rangeList.append(el("li", { class: "muted" }, "none: every frame takes the options above"));
  }
  async function loadRanges() {
    try { ranges = (await api("/api/merge/ranges")).ranges; } catch (e) { toast(e.message, "error"); ranges = []; }
    drawRanges();
  }
  async function setRange(a, b, opts) {
    try {
      ranges = (await api("/api/merge/ranges/set", { method: "POST", body: { first: a, last: b, options: opts } })).ranges;
      drawRanges();
      schedule();
      return true;
    } catch (e) { toast(e.message, "error"); return false; }
  }
  async function applyRange() {
    const a = Number(first.value), b = Number(last.value);
    if (await setRange(a, b, options())) toast(`Frames ${a}–${b} take these options.`);
  }
  function editRange(r) {
    if (!r) return;
    for (const [k, v] of Object.entries(r.options)) if (inputs.has(k)) setValue(k, v);
    first.value = r.first; last.value = r.last;
    ignore.checked = true;  // the controls are what is shown until applied again
    schedule();
  }
  function removeRange(r) { setRange(r.first, r.last, {}); }

  // -- merge all, the result, verify --------------------------------------------------------
  async function mergeAll() {
    const values = { ...options(), model_name: modelSel.value, to_video: outputSel.value === "video" };
    if (workers.value) values.workers = Number(workers.value);
    try { await jobs.start("merge", values); } catch (e) { toast(e.message, "error"); }
  }

  async function showResult() {
    let info, verdict;
    try {
      info = await api("/api/merge/setup");
      if (!info.result) { resultBox.replaceChildren(); return; }
      verdict = await api("/api/merge/verify");
    } catch (e) { resultBox.replaceChildren(el("p", { class: "bad" }, e.message)); return; }
    const stamp = Date.now();
    const result = el("video", { id: "result-video", controls: true, preload: "auto", src: `/api/merge/video/result?v=${stamp}` });
    const dst = el("video", { id: "dst-video", muted: true, preload: "auto", src: `/api/merge/video/dst?v=${stamp}` });
    dst.muted = true;
    const follow = () => {
      if (Math.abs(dst.currentTime - result.currentTime) > 0.08) dst.currentTime = result.currentTime;
    };
    result.addEventListener("play", () => { follow(); dst.play().catch(() => {}); });
    result.addEventListener("pause", () => { dst.pause(); follow(); });
    result.addEventListener("seeked", follow);
    result.addEventListener("timeupdate", follow);
    result.addEventListener("ratechange", () => { dst.playbackRate = result.playbackRate; });
    resultBox.replaceChildren(
      el("h3", {}, `${info.result} `, el("span", { id: "merge-verify", class: verdict.synthetic ? "ok" : "bad",
        "data-verify": verdict.synthetic ? "synthetic" : "unmarked" }, verdict.synthetic ? "verify: marked synthetic" : "verify: NOT marked synthetic")),
      el("div", { class: "muted", id: "merge-verify-detail" }, verdictText(verdict)),
      el("div", { class: "players" }, el("figure", {}, result, el("figcaption", {}, "result")),
        el("figure", {}, dst, el("figcaption", {}, "dst"))));
    resultBox.dataset.loaded = String(stamp);
  }

  // -- events -----------------------------------------------------------------------------
  slider.addEventListener("input", () => go(Number(slider.value)));
  number.addEventListener("change", () => {
    const i = frames.indexOf(Number(number.value));
    if (i >= 0) go(i); else { toast(`dst has no frame ${number.value}.`, "error"); number.value = String(frameNo()); }
  });
  modelSel.addEventListener("change", schedule);
  outputSel.addEventListener("change", schedule);
  ignore.addEventListener("change", schedule);
  dstBtn.addEventListener("click", toggleDst);

  function onKey(e) {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox"))) return;
    const k = e.key.toLowerCase();
    const by = e.shiftKey ? 10 : 1;
    let handled = true;
    if (k === "," || k === "<" || k === "arrowleft") go(index - by);
    else if (k === "." || k === ">" || k === "arrowright") go(index + by);
    else if (k === "home") go(0);
    else if (k === "end") go(frames.length - 1);
    else if (k === "tab") toggleDst();
    else if (k === "h") help.hidden = !help.hidden;
    else if (k === "r") reset();
    else if (k === "a") applyRange();
    else if (k === "[") first.value = frameNo();
    else if (k === "]") last.value = frameNo();
    else if (/^[1-9]$/.test(k) && inputs.has("mode") && Number(k) <= inputs.get("mode").f.choices.length) {
      setValue("mode", inputs.get("mode").f.choices[Number(k) - 1]); schedule();
    } else if (k in CYCLE_KEYS && inputs.has(CYCLE_KEYS[k])) {
      const { f } = inputs.get(CYCLE_KEYS[k]);
      const i = f.choices.indexOf(value(f.name));
      setValue(f.name, f.choices[(i + (e.shiftKey ? -1 : 1) + f.choices.length) % f.choices.length]); schedule();
    } else {
      const hit = Object.entries(STEP_KEYS).find(([name, [up, down]]) => inputs.has(name) && (k === up || k === down));
      if (!hit) handled = false;
      else {
        const [name, [up, , step]] = hit;
        const { input } = inputs.get(name);
        const v = value(name) + (k === up ? step : -step) * by;
        setValue(name, Math.max(Number(input.min), Math.min(Number(input.max), v))); schedule();
      }
    }
    if (handled) e.preventDefault();
  }
  document.addEventListener("keydown", onKey);
  const off = onJob((kind, job) => {
    if (kind === "end" && job.stage === "merge") showResult();
  });

  reset();
  if (!setup.models.length) note.textContent = "No model yet: train one first.";
  if (!frames.length) note.textContent = "dst has no frames: extract them first.";
  await loadRanges();
  go(0);
  showResult();
  root.dataset.ready = "1";
  return () => {
    alive = false; off(); clearTimeout(timer);
    document.removeEventListener("keydown", onKey);
    if (inflight) inflight.abort();
    if (url) URL.revokeObjectURL(url);
  };
}
