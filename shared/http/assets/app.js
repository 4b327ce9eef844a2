// The Lotsawa dashboard: the queue, submission, and a job's chunks side by
// side with their source, over the same HTTP API and SSE streams as every
// other client. No framework, no build step.
"use strict";

const TERMINAL = ["completed", "failed", "cancelled"];
const state = { config: { streamUrl: "", requireAuth: false }, engines: [], sources: [], timers: [] };

const $ = (sel, root = document) => root.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v === true) n.setAttribute(k, "");
    else n.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

function key() { return sessionStorage.getItem("lotsawa-key") || ""; }

function askKey() {
  const d = $("#key-dialog");
  if (!d.open) d.showModal();
  $("#key-input").focus();
}

// One API call: {ok, status, data, detail}. A 401 asks for a key.
// `form`: a FormData body sent as is (its files; the browser sets the type).
async function api(method, path, body, form) {
  const headers = { accept: "application/json" };
  if (key()) headers.authorization = "Bearer " + key();
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers,
      body: form !== undefined ? form : body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, data: null, detail: "cannot reach the server: " + e.message };
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (res.status === 401) askKey();
  const detail = res.ok ? "" : (data && data.detail) || res.statusText || ("HTTP " + res.status);
  return { ok: res.ok, status: res.status, data, detail };
}

// A request with a raw body (a file) or a raw answer (an export):
// {ok, status, text, detail}.
async function raw(method, path, body, type, ifMatch) {
  const headers = {};
  if (key()) headers.authorization = "Bearer " + key();
  if (type) headers["content-type"] = type;
  if (ifMatch) headers["if-match"] = ifMatch;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (e) {
    return { ok: false, status: 0, text: "", detail: "cannot reach the server: " + e.message };
  }
  const text = await res.text();
  let detail = "";
  if (!res.ok) {
    try { detail = JSON.parse(text).detail || ""; } catch { detail = ""; }
    detail = detail || res.statusText || ("HTTP " + res.status);
  }
  if (res.status === 401) askKey();
  return { ok: res.ok, status: res.status, text, detail };
}

// Save `text` as a file named `name` (an export), through a link clicked
// once.
function saveFile(name, type, text) {
  const a = el("a", { download: name, href: URL.createObjectURL(new Blob([text], { type })) });
  document.body.append(a);
  a.click();
  a.remove();
}

function streamUrl(path) {
  const base = state.config.streamUrl || "";
  const sep = path.includes("?") ? "&" : "?";
  return base + path + (key() ? sep + "access_token=" + encodeURIComponent(key()) : "");
}

function stopLive() {
  for (const s of state.sources) s.close();
  for (const t of state.timers) clearInterval(t);
  state.sources = [];
  state.timers = [];
  // Callbacks of the view being left see that it is gone.
  state.view = (state.view || 0) + 1;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(ms / 1000);
  if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return s + "s";
}

function bar(percent, label) {
  const b = el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": percent, "aria-label": label || "progress" }, el("span"));
  b.firstChild.style.width = percent + "%";
  return b;
}
function setBar(b, percent) {
  b.setAttribute("aria-valuenow", percent);
  b.firstChild.style.width = percent + "%";
}

function go(path) {
  history.pushState({}, "", path);
  route();
}

function link(path, text) {
  return el("a", { href: path, onclick: (e) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(path);
  } }, text);
}

function route() {
  stopLive();
  const app = $("#app");
  app.replaceChildren();
  const p = location.pathname;
  let m;
  if ((m = p.match(/^\/jobs\/([0-9a-fA-F-]{36})$/))) jobView(app, m[1]);
  else if ((m = p.match(/^\/batches\/([0-9a-fA-F-]{36})$/))) batchView(app, m[1]);
  else queueView(app);
  app.focus({ preventScroll: true });
}

// ---- queue ---------------------------------------------------------------

function parseMetrics(text) {
  const counts = {};
  let slots = null;
  for (const line of String(text).split("\n")) {
    let m = line.match(/^lotsawa_jobs\{status="(\w+)"\} (\d+)/);
    if (m) counts[m[1]] = Number(m[2]);
    m = line.match(/^lotsawa_slots_in_use (\d+)/);
    if (m) slots = Number(m[1]);
  }
  return { counts, slots };
}

async function refreshCounts(box) {
  const headers = key() ? { authorization: "Bearer " + key() } : {};
  try {
    const res = await fetch("/metrics", { headers });
    if (!res.ok) return;
    const { counts, slots } = parseMetrics(await res.text());
    box.replaceChildren(
      ...["pending", "processing", "completed", "failed", "cancelled"].map((s) =>
        el("span", {}, s + " ", el("b", { "data-count": s }, counts[s] ?? 0))),
      el("span", {}, "slots in use ", el("b", { "data-count": "slots" }, slots ?? "—")),
    );
  } catch { /* counts are a convenience */ }
}

function queueView(app) {
  const params = new URLSearchParams(location.search);
  const status = params.get("status") || "";
  const type = params.get("type") || "";
  const cursor = params.get("cursor") || "";
  document.title = "Lotsawa — queue";
  const counts = el("div", { class: "counts", "aria-live": "polite" });
  const message = el("p", { role: "status", class: "error", id: "queue-error" });
  const filters = el("form", { class: "filters", "aria-label": "Filter jobs", onchange: (e) => {
    const f = new FormData(e.currentTarget);
    const q = new URLSearchParams();
    for (const k of ["status", "type"]) if (f.get(k)) q.set(k, f.get(k));
    go("/" + (q.toString() ? "?" + q : ""));
  } },
    el("div", {}, el("label", { for: "f-status" }, "Status"),
      el("select", { id: "f-status", name: "status" },
        ["", "pending", "processing", "completed", "failed", "cancelled"].map((s) =>
          el("option", { value: s, selected: s === status }, s || "any")))),
    el("div", {}, el("label", { for: "f-type" }, "Type"),
      el("select", { id: "f-type", name: "type" },
        ["", "translation", "transliteration"].map((s) =>
          el("option", { value: s, selected: s === type }, s || "any")))));
  const body = el("tbody");
  const table = el("table", { "aria-label": "Jobs" },
    el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "Status"), el("th", {}, "Progress"),
      el("th", { class: "wide" }, "Chunks"), el("th", { class: "wide" }, "ETA"), el("th", {}, "Actions"))),
    body);
  const paging = el("div", { class: "actions" });
  const batches = el("div");
  app.append(
    el("h1", {}, "Queue"),
    el("section", { class: "card", "aria-label": "Counts" }, counts),
    el("section", { class: "card", "aria-labelledby": "jobs-title" },
      el("h2", { id: "jobs-title" }, "Jobs"), filters, message, el("div", { class: "scroll" }, table), paging),
    batches,
    submitForm(),
    glossaryCard(),
  );
  refreshCounts(counts);
  state.timers.push(setInterval(() => refreshCounts(counts), 3000));
  loadJobs(body, paging, message, { status, type, cursor });
  loadBatches(batches);
}

async function loadJobs(body, paging, message, { status, type, cursor }) {
  const q = new URLSearchParams({ limit: "20" });
  if (status) q.set("status", status);
  if (type) q.set("type", type);
  if (cursor) q.set("cursor", cursor);
  const r = await api("GET", "/api/jobs?" + q);
  if (!r.ok) { message.textContent = r.detail; return; }
  body.replaceChildren();
  if (!r.data.jobs.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No jobs yet.")));
  for (const j of r.data.jobs) body.append(jobRow(j, message));
  paging.replaceChildren();
  if (cursor) paging.append(el("button", { type: "button", onclick: () => go("/" + filterQuery(status, type)) }, "Newest"));
  if (r.data.nextCursor) {
    const next = new URLSearchParams();
    if (status) next.set("status", status);
    if (type) next.set("type", type);
    next.set("cursor", r.data.nextCursor);
    paging.append(el("button", { type: "button", onclick: () => go("/?" + next) }, "Older"));
  }
}

function filterQuery(status, type) {
  const q = new URLSearchParams();
  if (status) q.set("status", status);
  if (type) q.set("type", type);
  return q.toString() ? "?" + q : "";
}

function jobRow(j, message) {
  const st = el("span", { class: "status " + j.status, "data-status": j.id }, j.status);
  const b = bar(j.progress, "progress of job " + j.id);
  const chunks = el("span", {}, j.chunksCompleted + "/" + j.chunksTotal);
  const eta = el("span", {}, TERMINAL.includes(j.status) ? "—" : fmtMs(j.estimatedTimeRemaining));
  const actions = el("div", { class: "actions" });
  const row = el("tr", { "data-job": j.id },
    el("td", { class: "mono" }, link("/jobs/" + j.id, j.id.slice(0, 8)), " ", el("span", { class: "muted" }, j.type)),
    el("td", {}, st), el("td", {}, b), el("td", { class: "num wide" }, chunks), el("td", { class: "num wide" }, eta),
    el("td", {}, actions));
  let shownStatus = null;
  const update = (v) => {
    st.textContent = v.status;
    st.className = "status " + v.status;
    setBar(b, v.progress);
    chunks.textContent = v.chunksCompleted + "/" + v.chunksTotal;
    eta.textContent = TERMINAL.includes(v.status) ? "—" : fmtMs(v.estimatedTimeRemaining);
    // Buttons change only with the status, so focus is not lost to a
    // progress update.
    if (v.status !== shownStatus) {
      shownStatus = v.status;
      actions.replaceChildren(...actionButtons(v, message, (nv) => { update(nv); live(); }));
    }
  };
  const live = () => {
    if (TERMINAL.includes(st.textContent)) return;
    const s = new EventSource(streamUrl("/api/jobs/" + j.id + "/stream"));
    state.sources.push(s);
    s.onmessage = (e) => {
      let d;
      try { d = JSON.parse(e.data); } catch { return; }
      if (d.type === "progress") update({ ...j, ...d, id: j.id, type: j.type });
      if (TERMINAL.includes(d.type)) {
        s.close();
        api("GET", "/api/jobs/" + j.id).then((r) => r.ok && update(r.data));
      }
    };
  };
  update(j);
  live();
  return row;
}

function actionButtons(j, message, after) {
  const out = [];
  if (j.status === "pending" || j.status === "processing") {
    out.push(el("button", { type: "button", "aria-label": "Cancel job " + j.id, onclick: async () => {
      const r = await api("DELETE", "/api/jobs/" + j.id);
      message.textContent = r.ok ? "" : r.detail;
      const now = await api("GET", "/api/jobs/" + j.id);
      if (now.ok) after(now.data);
    } }, "Cancel"));
  }
  if (j.status === "failed" || j.status === "cancelled") {
    out.push(el("button", { type: "button", "aria-label": "Retry job " + j.id, onclick: async () => {
      const r = await api("POST", "/api/jobs/" + j.id + "/retry");
      message.textContent = r.ok ? "" : r.detail;
      const now = await api("GET", "/api/jobs/" + j.id);
      if (now.ok) after(now.data);
    } }, "Retry"));
  }
  return out;
}

async function loadBatches(box) {
  const r = await api("GET", "/api/batches?limit=10");
  if (!r.ok || !r.data.batches.length) return;
  const body = el("tbody");
  for (const b of r.data.batches) {
    body.append(el("tr", {},
      el("td", { class: "mono" }, link("/batches/" + b.id, b.id.slice(0, 8))),
      el("td", {}, el("span", { class: "status " + b.status }, b.status)),
      el("td", {}, bar(b.progress, "progress of batch " + b.id)),
      el("td", { class: "num" }, (b.counts.completed + b.counts.failed + b.counts.cancelled) + "/" + b.total)));
  }
  box.append(el("section", { class: "card", "aria-labelledby": "batches-title" },
    el("h2", { id: "batches-title" }, "Batches"),
    el("div", { class: "scroll" }, el("table", { "aria-label": "Batches" },
      el("thead", {}, el("tr", {}, el("th", {}, "Batch"), el("th", {}, "Status"), el("th", {}, "Progress"), el("th", {}, "Items"))),
      body))));
}

// ---- submit --------------------------------------------------------------

function parseGlossary(text) {
  const terms = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim() || line.startsWith("#")) continue;
    const [bo, en] = line.split("\t");
    if (bo && en) terms.push({ bo: bo.trim(), en: en.trim() });
  }
  return terms;
}

// The tenant's glossaries: upload (TSV, TBX or JSON by the file's
// extension), list, delete; the submit form offers them to a job.
function glossaryCard() {
  const list = el("ul", { id: "glossaries", class: "plain" });
  const message = el("p", { class: "error", role: "alert", id: "glossary-error" });
  const name = el("input", { id: "g-name", name: "name", placeholder: "Heart Sutra terms" });
  const file = el("input", { id: "g-file", type: "file", accept: ".tsv,.txt,.tbx,.xml,.json" });
  const load = async () => {
    const r = await api("GET", "/api/glossaries");
    if (!r.ok) { message.textContent = r.detail; return; }
    list.replaceChildren(...r.data.glossaries.map((g) => el("li", { "data-glossary": g.id },
      el("span", {}, g.name), " ", el("span", { class: "muted" }, g.terms + " terms"), " ",
      el("button", { type: "button", class: "link", "aria-label": "Delete glossary " + g.name, onclick: async () => {
        const d = await api("DELETE", "/api/glossaries/" + g.id);
        if (!d.ok) message.textContent = d.detail;
        await load();
        await fillGlossaryChoice();
      } }, "delete"))));
    if (!r.data.glossaries.length) list.append(el("li", { class: "muted" }, "none yet"));
  };
  const form = el("form", { id: "glossary-form", "aria-labelledby": "glossaries-title", onsubmit: async (e) => {
    e.preventDefault();
    message.textContent = "";
    const f = file.files[0];
    if (!f) { message.textContent = "choose a TSV, TBX or JSON file"; return; }
    const type = /\.json$/i.test(f.name) ? "application/json"
      : /\.(tbx|xml)$/i.test(f.name) ? "application/x-tbx" : "text/tab-separated-values";
    const q = name.value.trim() ? "?name=" + encodeURIComponent(name.value.trim()) : "";
    const r = await raw("POST", "/api/glossaries" + q, await f.text(), type);
    if (!r.ok) { message.textContent = r.detail; return; }
    form.reset();
    await load();
    await fillGlossaryChoice();
  } },
    el("h2", { id: "glossaries-title" }, "Glossaries"),
    list,
    el("div", { class: "grid2" },
      el("div", {}, el("label", { for: "g-name" }, "Name"), name),
      el("div", {}, el("label", { for: "g-file" }, "File: TSV (Tibetan, a tab, English), TBX or JSON"), file)),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Upload glossary")),
    message);
  load();
  return el("section", { class: "card" }, form);
}

// The submit form's choice of glossaries.
async function fillGlossaryChoice() {
  const box = $("#s-glossaries");
  if (!box) return;
  const r = await api("GET", "/api/glossaries");
  if (!r.ok) return;
  box.replaceChildren(...r.data.glossaries.map((g) => el("label", { class: "check" },
    el("input", { type: "checkbox", name: "glossaryId", value: g.id }), " " + g.name)));
  if (!r.data.glossaries.length) box.append(el("span", { class: "muted" }, "none: upload one below"));
}

function submitForm() {
  const error = el("p", { class: "error", role: "alert", id: "submit-error" });
  const engines = el("select", { id: "s-engine", name: "engine" }, el("option", { value: "" }, "default"));
  for (const e of state.engines) engines.append(el("option", { value: e }, e));
  const glossary = el("textarea", { id: "s-glossary", name: "glossary", rows: 2, class: "tibetan",
    placeholder: "བྱང་ཆུབ་སེམས་དཔའ\tbodhisattva" });
  const form = el("form", { id: "submit-form", "aria-labelledby": "submit-title", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    const f = new FormData(form);
    const config = {};
    if (f.get("engine")) config.engine = f.get("engine");
    if (f.get("model")) config.model = f.get("model");
    if (f.get("chunkSize")) config.chunkSize = Number(f.get("chunkSize"));
    const terms = parseGlossary(String(f.get("glossary") || ""));
    if (terms.length) config.glossary = terms;
    const named = f.getAll("glossaryId").map(String);
    if (named.length) config.glossaryIds = named;
    const type = f.get("type");
    const files = [...$("#s-files", form).files];
    const button = $("button[type=submit]", form);
    button.disabled = true;
    try {
      const isPdf = (file) => file.type === "application/pdf" || /\.pdf$/i.test(file.name);
      if (files.some(isPdf)) {
        // PDFs go as files; the server reads their text (or says why not).
        const fd = new FormData();
        for (const file of files) fd.append("file", file, file.name);
        fd.append("config", JSON.stringify(config));
        fd.append("type", type);
        const batch = files.length > 1;
        const r = await api("POST", batch ? "/api/batches" : "/api/jobs", undefined, fd);
        if (!r.ok) { error.textContent = r.detail; return; }
        go(batch ? "/batches/" + r.data.batchId : "/jobs/" + r.data.jobId);
      } else if (files.length > 1) {
        const items = [];
        for (const file of files) items.push({ sourceText: await file.text(), name: file.name, type });
        const r = await api("POST", "/api/batches", { items, config });
        if (!r.ok) { error.textContent = r.detail; return; }
        go("/batches/" + r.data.batchId);
      } else {
        const text = files.length ? await files[0].text() : String(f.get("sourceText") || "");
        const r = await api("POST", "/api/jobs", { sourceText: text, type, config });
        if (!r.ok) { error.textContent = r.detail; return; }
        go("/jobs/" + r.data.jobId);
      }
    } finally {
      button.disabled = false;
    }
  } },
    el("h2", { id: "submit-title" }, "Submit"),
    el("label", { for: "s-text" }, "Tibetan text"),
    el("textarea", { id: "s-text", name: "sourceText", rows: 5, class: "tibetan", lang: "bo" }),
    el("div", { class: "grid2" },
      el("div", {}, el("label", { for: "s-files" }, "…or files: text or PDF (several make a batch)"),
        el("input", { id: "s-files", name: "files", type: "file", multiple: true,
          accept: ".txt,.pdf,text/plain,application/pdf" })),
      el("div", {}, el("label", { for: "s-type" }, "Type"),
        el("select", { id: "s-type", name: "type" }, el("option", { value: "translation" }, "translation"),
          el("option", { value: "transliteration" }, "transliteration"))),
      el("div", {}, el("label", { for: "s-engine" }, "Engine"), engines),
      el("div", {}, el("label", { for: "s-model" }, "Model"), el("input", { id: "s-model", name: "model" })),
      el("div", {}, el("label", { for: "s-chunk" }, "Chunk size"),
        el("input", { id: "s-chunk", name: "chunkSize", type: "number", min: 1, max: 100000, placeholder: "2000" })),
      el("div", {}, el("label", { for: "s-gfile" }, "Glossary file (TSV)"),
        el("input", { id: "s-gfile", type: "file", accept: ".tsv,.txt,text/tab-separated-values", onchange: async (e) => {
          const file = e.target.files[0];
          if (file) glossary.value = await file.text();
        } }))),
    el("label", { for: "s-glossary" }, "Glossary rows (Tibetan, a tab, English)"),
    glossary,
    el("fieldset", {}, el("legend", {}, "Glossaries"), el("div", { id: "s-glossaries", class: "checks" })),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Submit")),
    error);
  setTimeout(fillGlossaryChoice, 0);
  return el("section", { class: "card" }, form);
}

// ---- job -----------------------------------------------------------------

async function jobView(app, id) {
  document.title = "Lotsawa — job " + id.slice(0, 8);
  const message = el("p", { class: "error", role: "alert", id: "job-error" });
  const r = await api("GET", "/api/jobs/" + id);
  if (!r.ok) { app.append(el("h1", {}, "Job"), el("p", { class: "error" }, r.detail)); return; }
  let job = r.data;
  const st = el("span", { class: "status " + job.status, id: "job-status" }, job.status);
  const b = bar(job.progress, "job progress");
  const stats = el("div", { class: "stats", "aria-live": "polite" });
  const actions = el("div", { class: "actions" });
  const downloads = el("div", { class: "actions" });
  const ewts = el("input", { type: "checkbox", id: "ewts-toggle" });
  const grid = el("div", { class: "chunks", id: "chunks" },
    el("div", { class: "chunk head" }, el("div", { class: "src" }, "Source"), el("div", {}, "Translation")));
  const rows = new Map();
  app.append(
    el("p", {}, link("/", "← Queue")),
    el("h1", {}, "Job ", el("span", { class: "mono" }, id)),
    el("section", { class: "card" },
      el("div", { class: "stats" }, st, el("span", {}, job.type), el("span", {}, job.engine || "")),
      b, stats, actions, message, downloads),
    el("div", { class: "toggle" }, ewts, el("label", { for: "ewts-toggle" }, "Show the source in EWTS (Wylie)")),
    grid);

  // The translator's desk, by keyboard: Enter (or E) on a chunk edits it,
  // Ctrl+Enter saves, Ctrl+Shift+Enter saves and marks it reviewed, Escape
  // leaves the editor, R marks the focused chunk reviewed (or not), Alt+↓
  // and Alt+↑ (or J and K) move to the next and previous chunk.
  const cells = () => [...grid.querySelectorAll("[data-chunk]")];
  const focusChunk = (index, edit) => {
    const row = rows.get(index);
    if (!row) return;
    if (edit && row.data.translation != null) openEditor(row);
    else row.out.focus();
  };
  const move = (from, step, edit) => {
    const all = cells().map((c) => Number(c.dataset.chunk));
    const at = all.indexOf(from);
    const next = all[at + step];
    if (next !== undefined) focusChunk(next, edit);
  };
  const refreshJob = async () => {
    const now = await api("GET", "/api/jobs/" + id);
    if (now.ok) show(now.data);
  };
  const save = async (row, body, after) => {
    if (!row.data.etag) {
      const fresh = await api("GET", "/api/jobs/" + id + "/chunks/" + row.data.index);
      if (fresh.ok) Object.assign(row.data, fresh.data);
    }
    const r = await raw("PUT", "/api/jobs/" + id + "/chunks/" + row.data.index + "/translation",
      JSON.stringify(body), "application/json", row.data.etag);
    if (r.status === 412) {
      message.textContent = "chunk " + row.data.index + " changed meanwhile: it shows the new version now";
      const fresh = await api("GET", "/api/jobs/" + id + "/chunks/" + row.data.index);
      if (fresh.ok) chunkRow(fresh.data);
      return false;
    }
    if (!r.ok) { message.textContent = r.detail; return false; }
    message.textContent = "";
    chunkRow(JSON.parse(r.text));
    await refreshJob();
    if (after) after();
    return true;
  };
  const openEditor = (row) => {
    if (row.editor) { row.editor.focus(); return; }
    const area = el("textarea", { class: "editor", rows: 3, lang: "en",
      "aria-label": "Translation of chunk " + row.data.index });
    area.value = row.data.translation || "";
    const note = el("input", { class: "note", placeholder: "note (optional)",
      "aria-label": "Note for chunk " + row.data.index });
    row.editor = area;
    row.editorBox = el("div", { class: "edit" }, area, note,
      el("span", { class: "meta" }, "Ctrl+Enter save · Ctrl+Shift+Enter save and mark reviewed · Esc cancel"));
    row.out.append(row.editorBox);
    const keys = async (e) => {
      if (e.key === "Escape") { e.preventDefault(); closeEditor(row); row.out.focus(); return; }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        e.stopPropagation();
        const body = { text: area.value };
        if (note.value.trim()) body.note = note.value.trim();
        if (e.shiftKey) body.reviewed = true;
        const index = row.data.index;
        if (await save(row, body)) { closeEditor(row); move(index, 1, true); }
        return;
      }
      if (e.altKey && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
        e.preventDefault();
        e.stopPropagation();
        move(row.data.index, e.key === "ArrowDown" ? 1 : -1, true);
      }
    };
    // The same keys in the text and in its note.
    area.addEventListener("keydown", keys);
    note.addEventListener("keydown", keys);
    area.focus();
  };
  const closeEditor = (row) => {
    if (row.editorBox) row.editorBox.remove();
    row.editor = null;
    row.editorBox = null;
  };
  const retranslate = async (row, engine, model) => {
    const before = (row.data.revisions || []).length;
    const body = { engine };
    if (model) body.model = model;
    const r = await api("POST", "/api/jobs/" + id + "/chunks/" + row.data.index + "/retranslate", body);
    if (!r.ok) { message.textContent = r.detail; return; }
    message.textContent = "chunk " + row.data.index + ": re-translating with " + engine + "…";
    const view = state.view;
    for (let i = 0; i < 120 && view === state.view; i++) {
      await new Promise((ok) => setTimeout(ok, 500));
      const c = await api("GET", "/api/jobs/" + id + "/chunks/" + row.data.index);
      if (c.ok && (c.data.revisions || []).length > before) {
        row.showRevisions = true;
        chunkRow(c.data);
        message.textContent = "";
        return;
      }
    }
    message.textContent = "chunk " + row.data.index + ": no new revision yet; it appears when the engine answers";
  };
  const revisionsPanel = (row) => {
    const d = row.data;
    return el("div", { class: "revisions", "aria-label": "Revisions of chunk " + d.index },
      (d.revisions || []).map((v) => el("div", { class: "revision" + (v.current ? " current" : ""), "data-revision": v.n },
        el("div", { class: "meta" }, "#" + v.n + " · " + v.origin + (v.engine ? " · " + v.engine : "") +
          (v.model ? " · " + v.model : "") + (v.keyId ? " · key " + v.keyId : "") +
          (v.createdAt ? " · " + v.createdAt.slice(0, 16).replace("T", " ") : "")),
        el("div", { class: "revision-text" }, v.text),
        v.note ? el("div", { class: "meta" }, "note: " + v.note) : null,
        v.current ? el("span", { class: "meta" }, "current")
          : el("button", { type: "button", class: "link", onclick: () => save(row, { revision: v.n }) },
            "Use revision " + v.n))),
      el("form", { class: "retranslate", onsubmit: (e) => {
        e.preventDefault();
        const f = new FormData(e.currentTarget);
        retranslate(row, String(f.get("engine")), String(f.get("model") || "").trim());
      } },
        el("label", {}, "Engine ", el("select", { name: "engine", "aria-label": "Engine for chunk " + d.index },
          state.engines.filter((e) => e !== "ewts").map((e) => el("option", { value: e }, e)))),
        el("label", {}, " Model ", el("input", { name: "model", size: 12, "aria-label": "Model for chunk " + d.index })),
        el("button", { type: "submit" }, "Re-translate")));
  };
  const chunkRow = (c) => {
    let row = rows.get(c.index);
    if (!row) {
      const src = el("div", { class: "src tibetan", lang: "bo" });
      const out = el("div", { "data-chunk": c.index, tabindex: 0, class: "cell" });
      row = { src, out, data: {}, editor: null, editorBox: null, showRevisions: false };
      rows.set(c.index, row);
      grid.append(el("div", { class: "chunk" }, src, out));
      out.addEventListener("keydown", (e) => {
        // Ctrl/Cmd combinations stay the browser's (Ctrl+R reloads).
        if (e.target !== out || e.ctrlKey || e.metaKey) return;
        const d = row.data;
        if ((e.key === "Enter" || e.key === "e") && d.translation != null) { e.preventDefault(); openEditor(row); }
        else if (e.key === "r" && d.translation != null) { e.preventDefault(); save(row, { reviewed: !d.reviewed }); }
        else if ((e.altKey && e.key === "ArrowDown") || e.key === "j") { e.preventDefault(); move(d.index, 1, false); }
        else if ((e.altKey && e.key === "ArrowUp") || e.key === "k") { e.preventDefault(); move(d.index, -1, false); }
      });
    }
    Object.assign(row.data, c);
    const d = row.data;
    row.src.textContent = ewts.checked && d.sourceEwts ? d.sourceEwts : d.source || "";
    row.src.lang = ewts.checked && d.sourceEwts ? "bo-Latn" : "bo";
    row.src.classList.toggle("tibetan", !(ewts.checked && d.sourceEwts));
    const editing = row.editorBox;
    row.out.replaceChildren();
    row.out.classList.toggle("reviewed", Boolean(d.reviewed));
    if (d.translation !== undefined && d.translation !== null) {
      row.out.append(el("span", { class: "translation" }, d.translation));
      const meta = [];
      if (d.attempts !== undefined) meta.push("attempts " + d.attempts);
      if (d.confidence !== undefined && d.confidence !== null) meta.push("confidence " + Number(d.confidence).toFixed(2));
      if (d.fromMemory) meta.push("from memory");
      const revs = (d.revisions || []).length;
      if (revs > 1) meta.push("revision " + d.revision + " of " + revs);
      if (d.examples && d.examples.length) meta.push(d.examples.length + " examples (best " + d.examples[0].similarity.toFixed(2) + ")");
      row.out.append(el("span", { class: "meta" }, meta.join(" · ")));
      if (d.reviewed) row.out.append(el("span", { class: "meta ok" }, "✓ reviewed"));
      if (d.warning) row.out.append(el("span", { class: "meta warn" }, "⚠ " + d.warning));
      row.out.append(el("div", { class: "chunk-actions" },
        el("button", { type: "button", class: "link", onclick: () => openEditor(row) }, "Edit"),
        el("button", { type: "button", class: "link", onclick: () => save(row, { reviewed: !d.reviewed }) },
          d.reviewed ? "Unmark reviewed" : "Mark reviewed"),
        el("button", { type: "button", class: "link", "aria-expanded": String(row.showRevisions), onclick: () => {
          row.showRevisions = !row.showRevisions;
          chunkRow({ index: d.index });
        } }, "Revisions (" + Math.max(revs, 1) + ")")));
      if (row.showRevisions) row.out.append(revisionsPanel(row));
      if (editing) row.out.append(editing);
    } else {
      row.out.append(el("span", { class: "pending" }, d.status === "failed" ? "failed: " + (d.error || "") : "waiting…"));
    }
  };
  ewts.addEventListener("change", () => { for (const row of rows.values()) chunkRow(row.data); });

  let shownStatus = null;
  const show = (v) => {
    job = v;
    st.textContent = v.status;
    st.className = "status " + v.status;
    setBar(b, v.progress);
    stats.replaceChildren(
      el("span", {}, "progress ", el("b", { id: "job-progress" }, v.progress + "%")),
      el("span", {}, "chunks ", el("b", {}, v.chunksCompleted + "/" + v.chunksTotal)),
      el("span", {}, "ETA ", el("b", {}, TERMINAL.includes(v.status) ? "—" : fmtMs(v.estimatedTimeRemaining))),
      el("span", {}, "throughput ", el("b", {}, v.throughput ? v.throughput + " chunks/min" : "—")),
      el("span", {}, "reviewed ", el("b", { id: "job-reviewed" }, (v.review ? v.review.reviewed : 0) + "/" + v.chunksTotal)),
      ...(v.error ? [el("span", { class: "error" }, v.error)] : []));
    if (v.status !== shownStatus) {
      shownStatus = v.status;
      actions.replaceChildren(...actionButtons(v, message, (nv) => { show(nv); connect(); }));
    }
    downloads.replaceChildren();
    if (v.status === "completed" && v.result) {
      const blobLink = (name, type, text) => el("a", { download: name,
        href: URL.createObjectURL(new Blob([text], { type })) }, "Download " + name.slice(name.indexOf(".") + 1));
      downloads.append(blobLink(id + ".txt", "text/plain", v.result.translation.replaceAll("\f", "")),
        blobLink(id + ".json", "application/json", JSON.stringify(v, null, 2)));
      if (v.sourcePages) {
        // A document's translation with a [page N] line where each page starts.
        api("GET", "/api/jobs/" + id + "/result?pages=true").then((r) => {
          if (r.ok && typeof r.data === "string") downloads.append(blobLink(id + ".pages.txt", "text/plain", r.data));
        });
      }
    }
  };
  show(job);

  // Exchange with CAT tools: TMX, XLIFF 2.1 and a printable page of each
  // chunk's current revision; an XLIFF edited elsewhere comes back as
  // revisions.
  const exportAs = async (format, ext, type) => {
    const r = await raw("GET", "/api/jobs/" + id + "/export?format=" + format);
    if (!r.ok) { message.textContent = r.detail; return; }
    if (format === "html") {
      window.open(URL.createObjectURL(new Blob([r.text], { type })), "_blank");
    } else {
      saveFile(id + "." + ext, type, r.text);
    }
    importReport.textContent = "exported " + id + "." + ext + " (" + r.text.length + " characters)";
  };
  const xliffFile = el("input", { id: "xliff-file", type: "file", accept: ".xlf,.xliff,.xml" });
  const importReport = el("p", { role: "status", id: "import-report" });
  app.append(el("section", { class: "card", "aria-label": "Exchange" },
    el("div", { class: "actions" },
      el("button", { type: "button", id: "export-tmx", onclick: () => exportAs("tmx", "tmx", "application/x-tmx+xml") }, "Export TMX"),
      el("button", { type: "button", id: "export-xliff", onclick: () => exportAs("xliff", "xlf", "application/xliff+xml") }, "Export XLIFF"),
      el("button", { type: "button", id: "export-html", onclick: () => exportAs("html", "html", "text/html") }, "Print view"),
      el("label", { for: "xliff-file" }, "Import XLIFF "), xliffFile,
      el("button", { type: "button", id: "import-xliff", onclick: async () => {
        const f = xliffFile.files[0];
        if (!f) { message.textContent = "choose an XLIFF file exported from this job"; return; }
        const r = await raw("POST", "/api/jobs/" + id + "/import", await f.text(), "application/xliff+xml");
        if (!r.ok) { message.textContent = r.detail; return; }
        const rep = JSON.parse(r.text);
        importReport.textContent = rep.updated.length + " chunks corrected, " + rep.reviewed.length +
          " review marks changed, " + rep.unchanged + " unchanged" +
          (rep.skipped.length ? ", " + rep.skipped.length + " skipped" : "");
        await loadChunks();
        await refreshJob();
      } }, "Import")),
    importReport,
    el("p", { class: "muted" }, "Keys: Enter edit · Ctrl+Enter save · Ctrl+Shift+Enter save and mark reviewed · R reviewed · Alt+↑/↓ or J/K move")));
  grid.remove();
  app.append(grid);

  const loadChunks = async () => {
    const c = await api("GET", "/api/jobs/" + id + "/chunks?ewts=true");
    if (c.ok) for (const ch of c.data.chunks) chunkRow(ch);
  };
  await loadChunks();

  let source = null;
  let refusals = 0;
  const view = state.view;
  const connect = () => {
    if (source) source.close();
    if (view !== state.view || TERMINAL.includes(job.status)) return;
    // EventSource reconnects by itself and sends Last-Event-ID, so a
    // dropped stream resumes with the chunks it missed.
    source = new EventSource(streamUrl("/api/jobs/" + id + "/stream"));
    state.sources.push(source);
    source.onopen = () => { refusals = 0; };
    source.onmessage = async (e) => {
      let d;
      try { d = JSON.parse(e.data); } catch { return; }
      if (d.type === "chunk") chunkRow({ index: d.index, translation: d.translation, status: "completed", etag: "" });
      else if (d.type === "progress") show({ ...job, ...d, id, type: job.type });
      else if (TERMINAL.includes(d.type)) {
        source.close();
        const now = await api("GET", "/api/jobs/" + id);
        if (now.ok) show(now.data);
        await loadChunks();
      }
    };
    source.addEventListener("close", () => source.close());
    // A stream refused outright (e.g. 429 when a deployment caps its open
    // streams) is not retried by the browser: read the job meanwhile and
    // open a stream again later, backing off (5 s doubling to a minute,
    // with jitter); a refused key stops it (the page asks for a key).
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return;
      const delay = Math.min(60000, 5000 * 2 ** refusals) * (0.5 + Math.random() / 2);
      refusals += 1;
      state.timers.push(setTimeout(async () => {
        if (view !== state.view) return;
        const now = await api("GET", "/api/jobs/" + id);
        if (view !== state.view || now.status === 401 || now.status === 403) return;
        if (now.ok) show(now.data);
        await loadChunks();
        connect();
      }, delay));
    };
  };
  connect();
}

// ---- batch ---------------------------------------------------------------

async function batchView(app, id) {
  document.title = "Lotsawa — batch " + id.slice(0, 8);
  const r = await api("GET", "/api/batches/" + id);
  if (!r.ok) { app.append(el("h1", {}, "Batch"), el("p", { class: "error" }, r.detail)); return; }
  const st = el("span", { class: "status" });
  const b = bar(0, "batch progress");
  const stats = el("div", { class: "stats", "aria-live": "polite" });
  const body = el("tbody");
  const message = el("p", { class: "error", role: "alert" });
  const actions = el("div", { class: "actions" });
  const show = (v) => {
    st.textContent = v.status;
    st.className = "status " + v.status;
    setBar(b, v.progress);
    stats.replaceChildren(el("span", {}, "progress ", el("b", {}, v.progress + "%")),
      el("span", {}, "ETA ", el("b", {}, TERMINAL.includes(v.status) ? "—" : fmtMs(v.estimatedTimeRemaining))),
      ...Object.entries(v.counts).map(([k, n]) => el("span", {}, k + " ", el("b", {}, n))));
    if (v.items) {
      body.replaceChildren(...v.items.map((i) => el("tr", {},
        el("td", {}, link("/jobs/" + i.jobId, i.name)),
        el("td", {}, el("span", { class: "status " + i.status }, i.status)),
        el("td", {}, bar(i.progress, "progress of " + i.name)))));
    }
    actions.replaceChildren(
      el("button", { type: "button", disabled: TERMINAL.includes(v.status), onclick: async () => {
        const x = await api("DELETE", "/api/batches/" + id);
        message.textContent = x.ok ? "" : x.detail;
        if (x.ok) show(x.data);
      } }, "Cancel batch"),
      el("button", { type: "button", disabled: !(v.counts.failed + v.counts.cancelled), onclick: async () => {
        const x = await api("POST", "/api/batches/" + id + "/retry");
        message.textContent = x.ok ? "" : x.detail;
        if (x.ok) { show(x.data); connect(); }
      } }, "Retry failed and cancelled"));
  };
  app.append(el("p", {}, link("/", "← Queue")), el("h1", {}, "Batch ", el("span", { class: "mono" }, id)),
    el("section", { class: "card" }, st, b, stats, actions, message),
    el("table", { "aria-label": "Items" },
      el("thead", {}, el("tr", {}, el("th", {}, "Item"), el("th", {}, "Status"), el("th", {}, "Progress"))), body));
  show(r.data);
  const connect = () => {
    const s = new EventSource(streamUrl("/api/batches/" + id + "/stream"));
    state.sources.push(s);
    s.onmessage = async (e) => {
      let d;
      try { d = JSON.parse(e.data); } catch { return; }
      if (d.type === "progress" || d.type === "item" || TERMINAL.includes(d.type)) {
        const now = await api("GET", "/api/batches/" + id);
        if (now.ok) show(now.data);
      }
      if (TERMINAL.includes(d.type)) s.close();
    };
  };
  connect();
}

// ---- start ---------------------------------------------------------------

async function start() {
  const c = await api("GET", "/assets/config.json");
  if (c.ok && c.data) state.config = c.data;
  const h = await api("GET", "/healthz");
  if (h.ok) state.engines = h.data.engines || [];
  const keyButton = $("#key-button");
  keyButton.hidden = !state.config.requireAuth;
  keyButton.addEventListener("click", askKey);
  $("#key-form").addEventListener("submit", () => {
    sessionStorage.setItem("lotsawa-key", $("#key-input").value.trim());
    route();
  });
  if (state.config.requireAuth && !key()) askKey();
  window.addEventListener("popstate", route);
  route();
}

start();
