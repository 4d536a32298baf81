// The workspace page: each stage's state, the next step, any stage run with its generated
// form; the job panel (app.js) streams its progress and cancels it.

import { api, el, onJob, stageForm, toast, verdictText } from "./app.js";

const SIDES = ["src", "dst"];

function dl(rows) {
  return el("dl", {}, rows.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function frameRows(s) {
  const f = s.frames;
  const where = f.kept_in_video ? "kept in the video" : f.format ? `${f.format} images` : "";
  return [
    ["video", s.videos.join(", ") || el("span", { class: "warn" }, "none")],
    ["frames", f.count ? `${f.count} ${where}` : "not extracted"],
    f.count ? ["complete", f.complete ? el("span", { class: "ok" }, "yes")
      : el("span", { class: "warn" }, "no: run again to finish")] : null,
  ];
}

function faceRows(s) {
  const a = s.faces;
  return [
    ["faces", a.extracted || a.count ? `${a.count} in data_${s.side}/aligned` : "not extracted"],
    a.extracted ? ["frames done", `${a.frames_done} of ${s.frames.count}`] : null,
    s.side === "dst" && a.extracted ? ["missing", a.missing
      ? el("span", { class: "warn", "data-missing": a.missing }, `${a.missing} frames without a face`)
      : el("span", { class: "ok", "data-missing": 0 }, "none")] : null,
    a.unreadable ? ["unreadable", el("span", { class: "bad" }, `${a.unreadable} frames`)] : null,
    a.trash ? ["trash", `${a.trash} faces`] : null,
  ];
}

export async function mount(root) {
  const formSlot = el("div", { id: "form-slot" });
  const body = el("div", { id: "ws-body" });
  root.append(formSlot, body);
  let alive = true;
  const verdicts = new Map();

  async function openForm(stage, initial = {}) {
    try {
      const form = await stageForm(stage, initial);
      formSlot.replaceChildren(form);
      form.scrollIntoView({ block: "nearest" });
      const first = form.querySelector("input, select");
      if (first) first.focus();
    } catch (e) { toast(e.message, "error"); }
  }

  function run(stage, side, label = "Run…") {
    return el("button", { type: "button", "data-stage": stage, "data-side": side || "",
      onclick: () => openForm(stage, side ? { side } : {}) }, label);
  }

  async function verdict(file, slot) {
    try {
      const v = verdicts.get(file) || await api(`/api/workspace/verify?file=${encodeURIComponent(file)}`);
      verdicts.set(file, v);
      slot.replaceChildren(el("span", { class: v.synthetic ? "ok" : "bad", "data-verify": v.synthetic ? "synthetic" : "unmarked" },
        v.synthetic ? "marked synthetic" : "NOT marked synthetic"), el("div", { class: "muted" }, verdictText(v)));
    } catch (e) { slot.replaceChildren(el("span", { class: "bad" }, e.message)); }
  }

  async function refresh() {
    let st;
    try { st = await api("/api/workspace"); } catch (e) { body.replaceChildren(el("p", { class: "bad" }, e.message)); return; }
    if (!alive) return;
    const next = st.next;
    const nodes = [];
    nodes.push(el("div", { class: "next", id: "next-step" }, el("strong", {}, "Next: "),
      el("span", {}, next.text), el("span", { class: "spacer" }),
      next.stage ? el("button", { type: "button", class: "primary", id: "run-next",
        onclick: () => openForm(next.stage, next.side ? { side: next.side } : {}) }, "Run…") : null));
    for (const b of st.busy) nodes.push(el("p", { class: "busy" }, `In use: ${b.lock} by ${b.by}`));
    const cards = el("div", { class: "cards" });
    for (const side of SIDES) {
      const s = st.sides[side];
      cards.append(el("section", { class: "card", id: `card-frames-${side}` },
        el("h3", {}, `${side} frames`), dl(frameRows(s)),
        el("div", { class: "actions" }, run("video-extract", side, "Extract frames…"),
          side === "dst" ? run("denoise", "dst", "Denoise…") : null)));
    }
    for (const side of SIDES) {
      const s = st.sides[side];
      cards.append(el("section", { class: "card", id: `card-faces-${side}` },
        el("h3", {}, `${side} faces`), dl(faceRows(s)),
        el("div", { class: "actions" }, run("extract", side, "Extract faces…"),
          el("a", { href: `#/faces?side=${side}` }, "Review"))));
    }
    const models = el("section", { class: "card", id: "card-model" }, el("h3", {}, "model"));
    if (!st.models.length) models.append(dl([["models", "none yet"]]));
    for (const m of st.models) {
      models.append(dl([["name", m.name], ["family", `${m.family}${m.preset ? ` (${m.preset})` : ""}`],
        ["iteration", el("span", { "data-iteration": m.iteration }, `${m.iteration ?? "?"}` +
          (m.target ? ` of ${m.target}` : ""))]]));
      if (m.preview) models.append(el("img", { class: "preview", alt: `${m.name} preview`, src: `/ws/${m.preview}` }));
    }
    models.append(el("div", { class: "actions" }, run("train", null, "Train…")));
    cards.append(models);
    const m = st.merged;
    cards.append(el("section", { class: "card", id: "card-merge" }, el("h3", {}, "merge"),
      dl([["merged frames", `${m.frames}`], m.segment_frames ? ["in segments", `${m.segment_frames} frames`] : null,
        m.model_id ? ["model", m.model_id] : null]),
      el("div", { class: "actions" }, run("merge", null, "Merge…"), run("assemble", null, "Assemble…"))));
    const result = el("section", { class: "card", id: "card-result" }, el("h3", {}, "result"));
    if (!st.results.length) result.append(dl([["result", "not made yet"]]));
    for (const r of st.results) {
      const slot = el("div", { class: "verify" }, el("span", { class: "muted" }, "verifying…"));
      result.append(dl([["file", el("a", { href: `/ws/${encodeURIComponent(r.name)}`, target: "_blank" }, r.name)],
        ["size", `${(r.bytes / 1e6).toFixed(1)} MB`], ["verify", slot]]));
      verdict(r.name, slot);
    }
    cards.append(result);
    nodes.push(cards);
    body.replaceChildren(...nodes);
    body.dataset.loaded = String(Date.now());
  }

  const off = onJob((kind) => { if (kind === "end" || kind === "start") refresh(); });
  await refresh();
  return () => { alive = false; off(); };
}
