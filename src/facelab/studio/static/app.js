// facelab studio's shell: the page switcher, the API helper, the job panel and the forms
// generated from the stages' declarations. Pages are ES modules exporting
// `mount(root, studio)`, which may return a function called when the page is left.

const HEADER = { "X-Facelab-Studio": "1" };

/** Call the studio's JSON API; a refusal throws an Error carrying the server's sentence. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { ...HEADER }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.trim() }; }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

/** A DOM element: el("div", {class: "x", onclick: f}, child, "text", ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return node;
}

/** What `facelab verify` found (its JSON verdict), in words: the C2PA manifest, then the marks. */
export function verdictText(v) {
  const m = v.manifest || { state: "absent" };
  let manifest = `C2PA manifest: ${m.state}`;
  if (m.signer) manifest += `, signed by ${m.signer}${m.self_signed ? " (self-signed)" : ""}`;
  const marks = (v.marks || []).map((f) => `${f.where}: ${f.source_type.split("/").pop()}${f.model_id ? ` (model ${f.model_id})` : ""}`);
  return [manifest, ...marks].join("; ");
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  const item = el("div", { class: kind }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// -- jobs ----------------------------------------------------------------------------------

const jobListeners = new Set();
let source = null;
let nextLine = 0;
let jobId = null;

/** Be told of every job event: fn(kind, data) with kind "start", "line", "progress", "end". */
export function onJob(fn) {
  jobListeners.add(fn);
  return () => jobListeners.delete(fn);
}

function emit(kind, data) {
  for (const fn of jobListeners) {
    try { fn(kind, data); } catch (e) { console.error(e); }
  }
}

function showJob(job) {
  const panel = document.getElementById("job");
  panel.hidden = false;
  const state = document.getElementById("job-state");
  state.textContent = job.cancelling && job.state === "running" ? "cancelling" : job.state;
  state.className = "badge " + job.state;
  document.getElementById("job-command").textContent = job.command;
  document.getElementById("job-cancel").disabled = job.state !== "running";
  const bar = document.getElementById("job-progress");
  const text = document.getElementById("job-progress-text");
  const p = job.progress;
  if (p && p.total) {
    bar.max = p.total; bar.value = p.done;
    text.textContent = `${p.what}: ${p.done}/${p.total}` + (p.eta ? `, ETA ${p.eta}` : "");
  } else if (job.state !== "running") {
    bar.max = 1; bar.value = 1; text.textContent = job.rc === null ? "" : `exit ${job.rc}`;
  } else {
    bar.removeAttribute("value"); text.textContent = p ? `${p.what}: ${p.done}` : "";
  }
}

function follow(job) {
  if (source) source.close();
  if (job.id !== jobId) {
    jobId = job.id; nextLine = 0;
    document.getElementById("job-log").textContent = "";
  }
  showJob(job);
  const live = job.state === "running";  // an old job's failure is shown, not announced
  source = new EventSource(`/api/jobs/current/events?from=${nextLine}`);
  const log = document.getElementById("job-log");
  source.addEventListener("line", (e) => {
    const d = JSON.parse(e.data);
    if (d.n < nextLine) return;  // a reconnect replays from where it asked
    nextLine = d.n + 1;
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(d.text + "\n");
    if (stick) log.scrollTop = log.scrollHeight;
    emit("line", d);
  });
  source.addEventListener("progress", (e) => { const s = JSON.parse(e.data); showJob(s); emit("progress", s); });
  source.addEventListener("end", (e) => {
    const s = JSON.parse(e.data);
    source.close(); source = null;
    showJob(s);
    if (live && (s.state === "failed" || s.state === "partial")) {
      document.getElementById("job-log").hidden = false;
      const last = log.textContent.trim().split("\n").pop();
      toast(last || `${s.command} failed`, "error");
    }
    emit("end", s);
  });
}

export const jobs = {
  async start(stage, values) {
    const job = await api("/api/jobs", { method: "POST", body: { stage, values } });
    emit("start", job);
    follow(job);
    return job;
  },
  async cancel() { showJob(await api("/api/jobs/current/cancel", { method: "POST" })); },
  async current() { return api("/api/jobs/current"); },
};

// -- forms generated from the stages' declarations -------------------------------------------

function fieldInput(f, value, models) {
  const id = `f-${f.name}`;
  if (f.kind === "bool" && (f.default === null || f.optional)) {
    const sel = el("select", { id, name: f.name });
    for (const [v, label] of [["", "default"], ["true", "on"], ["false", "off"]]) {
      sel.append(el("option", { value: v, selected: String(value ?? "") === v }, label));
    }
    return sel;
  }
  if (f.kind === "bool") {
    return el("input", { id, name: f.name, type: "checkbox", checked: Boolean(value) });
  }
  if (f.kind === "choice") {
    const sel = el("select", { id, name: f.name });
    if (!f.required) sel.append(el("option", { value: "" }, f.hint !== null ? `default (${f.hint})` : "default"));
    for (const c of f.choices) sel.append(el("option", { value: c, selected: value === c }, c));
    return sel;
  }
  const attrs = { id, name: f.name, type: f.kind === "int" || f.kind === "float" ? "number" : "text" };
  if (f.range) {
    if (f.range[0] !== null) attrs.min = f.range[0];
    if (f.range[1] !== null) attrs.max = f.range[1];
  }
  attrs.step = f.kind === "int" ? (f.step || 1) : f.kind === "float" ? "any" : undefined;
  if (f.hint !== null && f.hint !== undefined) attrs.placeholder = String(f.hint);
  if (f.name === "model_name" && models && models.length) attrs.list = "f-models";
  const input = el("input", attrs);
  if (value !== null && value !== undefined) input.value = value;
  return input;
}

/** A stage's form (GET /api/forms/<stage>); submitting starts the job. */
export async function stageForm(stage, initial = {}, { onStarted, onClose, main = 8 } = {}) {
  const spec = await api(`/api/forms/${stage}`);
  const fields = spec.fields.map((f) => {
    const value = f.name in initial ? initial[f.name] : f.default;
    const label = el("label", { for: `f-${f.name}` }, f.positional ? f.name : f.flag,
      f.fixed ? el("span", { class: "fixed" }, "fixed once the model exists") : null);
    const help = [f.help, f.allowed ? `(${f.allowed})` : ""].filter(Boolean).join(" ");
    return { f, node: el("div", { class: "field", "data-name": f.name }, label,
      fieldInput(f, value, spec.models), el("div", { class: "help" }, help)) };
  });
  const first = fields.filter((x, i) => i < main || x.f.required);
  const rest = fields.filter((x) => !first.includes(x));
  const error = el("div", { class: "form-error" });
  const form = el("form", { class: "form-panel", "data-stage": stage },
    el("h3", {}, spec.title, " ", el("code", { class: "muted" }, "facelab " + spec.command.join(" "))),
    el("div", { class: "form-grid" }, first.map((x) => x.node)),
    rest.length ? el("details", {}, el("summary", {}, `${rest.length} more options`),
      el("div", { class: "form-grid" }, rest.map((x) => x.node))) : null,
    spec.models && spec.models.length ? el("datalist", { id: "f-models" },
      spec.models.map((m) => el("option", { value: m }))) : null,
    error,
    el("div", { class: "buttons" },
      el("button", { type: "submit", class: "primary" }, "Run"),
      el("button", { type: "button", onclick: () => { form.remove(); onClose && onClose(); } }, "Close")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const { f } of fields) {
      const input = form.elements.namedItem(f.name);
      if (input.type === "checkbox") values[f.name] = input.checked;
      else if (input.value === "") continue;
      else if (f.kind === "bool") values[f.name] = input.value === "true";
      else if (f.kind === "int" || f.kind === "float") values[f.name] = Number(input.value);
      else values[f.name] = input.value;
    }
    error.textContent = "";
    try {
      const job = await jobs.start(stage, values);
      form.remove();
      onStarted && onStarted(job);
    } catch (e) { error.textContent = e.message; }
  });
  return form;
}

export const studio = { api, el, toast, jobs, onJob, stageForm, verdictText };

// -- pages ---------------------------------------------------------------------------------

let pages = [];
let leave = null;

async function route() {
  const id = (location.hash.replace(/^#\/?/, "").split("?")[0]) || (pages[0] && pages[0].id);
  const page = pages.find((p) => p.id === id) || pages[0];
  if (!page) return;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page.id);
  if (leave) { try { leave(); } catch (e) { console.error(e); } leave = null; }
  const root = document.getElementById("page");
  root.replaceChildren();
  root.dataset.page = page.id;
  const mod = await import(page.script);
  leave = (await mod.mount(root, studio)) || null;
}

async function start() {
  // the page in the address starts loading now, beside the list of pages (it is cached)
  const early = (location.hash.match(/^#\/?([a-z]+)/) || [null, "workspace"])[1];
  import(`/static/${early}.js`).catch(() => null);
  const [info, job] = await Promise.all([api("/api/pages"), jobs.current()]);
  pages = info.pages;
  document.getElementById("workspace").textContent = info.workspace;
  document.getElementById("nav").replaceChildren(...pages.map((p) =>
    el("a", { href: `#/${p.id}`, "data-page": p.id }, p.title)));
  document.getElementById("job-cancel").addEventListener("click", () =>
    jobs.cancel().catch((e) => toast(e.message, "error")));
  document.getElementById("job-toggle").addEventListener("click", () => {
    const log = document.getElementById("job-log"); log.hidden = !log.hidden;
  });
  document.getElementById("job-close").addEventListener("click", () => {
    document.getElementById("job").hidden = true;
  });
  window.addEventListener("hashchange", route);
  if (job) follow(job);
  await route();
  document.body.dataset.ready = "1";
}

start().catch((e) => {
  document.getElementById("page").replaceChildren(el("p", { class: "bad" }, e.message));
});
