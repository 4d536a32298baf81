// The mask editor's segmenter panel (issue 18): fine-tune the side's segmenter on the faces
// labelled here (`facelab mask train`), write every face's mask (`facelab mask apply`), and
// list the faces it is least sure of (`facelab mask worst`): "label this one" jumps to it.
// Each is the real CLI run as a studio job; the list is read from that job's own lines.
// Also the stored network mask as an overlay: what lies outside it is tinted red.

import { api, el, jobs, onJob, stageForm, toast } from "./app.js";

// "  aligned/00012_0.jpg  confidence 0.123" (cli/mask_cmd.py's list)
const WORST = /^\s+(aligned[a-z_]*)\/(\S+)\s+confidence\s+(-?[\d.]+)\s*$/;
const STAGES = ["mask-train", "mask-apply", "mask-worst"];

/** The stored mask at `url` as a canvas: outside the face tinted red, inside clear. */
export async function tintedMask(url) {
  const img = await new Promise((resolve, reject) => {
    const im = Object.assign(new Image(), { onload: () => resolve(im), src: url,
      onerror: () => reject(new Error("The face's mask could not be loaded.")) });
  });
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height);
  const d = px.data;
  for (let i = 0; i < d.length; i += 4) {
    const outside = 255 - d[i];  // grey mask: 255 face, 0 not
    d[i] = 248; d[i + 1] = 81; d[i + 2] = 73; d[i + 3] = Math.round(outside * 0.45);
  }
  g.putImageData(px, 0, 0);
  return c;
}

/** The panel; `side()` gives the page's side, `jump(folder, name)` opens a face,
 *  `changed(stage)` is told when a job has changed the masks. */
export function segmenterPanel({ side, jump, changed }) {
  const list = el("ol", { id: "worst-list", class: "worst-list" });
  const state = el("span", { id: "net-state", class: "muted" });
  const start = (stage) => jobs.start(stage, { side: side() }).catch((e) => toast(e.message, "error"));
  const button = (id, text, stage, title) =>
    el("button", { type: "button", id, title, onclick: () => start(stage) }, text);
  const slot = el("div", { class: "net-form" });
  const openTrain = () => stageForm("mask-train", { side: side() }, { main: 4 })
    .then((form) => slot.replaceChildren(form)).catch((e) => toast(e.message, "error"));
  const panel = el("div", { class: "mask-net", id: "mask-net" },
    el("span", { class: "muted" }, "Segmenter "),
    el("button", { type: "button", id: "net-train", onclick: openTrain,
      title: "facelab mask train: the side's own network from the faces with polygons" },
    "Fine-tune on the labelled faces…"),
    button("net-apply", "Write the masks", "mask-apply",
      "facelab mask apply: every face's mask from the side's network"),
    button("net-worst", "Faces to label next", "mask-worst",
      "facelab mask worst: the faces the network is least sure of"),
    state, slot, list);

  async function readList(job) {
    const data = await api("/api/jobs/current?tail=80");
    if (!data || data.id !== job.id) return;
    const found = (data.tail || []).map((t) => t.match(WORST)).filter(Boolean);
    list.replaceChildren(...found.map(([, folder, name, conf]) =>
      el("li", {}, el("button", { type: "button", class: "link", "data-face": `${folder}/${name}`,
        onclick: () => jump(folder, name) }, `label ${name}`),
      el("span", { class: "muted" }, ` confidence ${conf}`))));
    panel.dataset.worst = String(found.length);
    state.textContent = found.length ? "least sure of:" : "no unlabelled face left";
  }

  const off = onJob((kind, job) => {
    if (!STAGES.includes(job.stage)) return;
    if (kind === "start") state.textContent = `${job.stage.replace("mask-", "")} running…`;
    if (kind !== "end") return;
    state.textContent = job.state === "done" ? "" : `${job.stage} ${job.state}`;
    if (job.state !== "done") return;
    if (job.stage !== "mask-apply") readList(job).catch((e) => toast(e.message, "error"));
    changed(job.stage);
  });
  return { panel, off };
}
