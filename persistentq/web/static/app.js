// The persistentq dashboard: renders the API's JSON and follows /api/events.
// Every value from the queue (payloads, errors, results, worker names) goes
// into the page through textContent, never as HTML, so it shows as text.
"use strict";

const STATES = ["queued", "running", "done", "failed", "cancelled"];
const PAGE_SIZE = 25;
// The browser retries a dropped event stream by itself, but gives up for
// good after an error status (such as 503 when too many streams are open).
const RECONNECT_AFTER_ERROR_MS = 5000;
// Control characters, bidirectional overrides and other invisible characters.
// They are shown as \uXXXX so that a payload cannot hide or reorder its text.
const INVISIBLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;

const view = {
  offset: 0,
  state: "",
  search: "",
  selectedJob: null,
  lastCounts: null,
  pool: null,
  events: null,
  // Numbers of the latest jobs-page and job-detail requests. A response that
  // arrives after a newer request was sent is dropped, so a slow response to an
  // old search cannot replace the rows of the current one.
  jobsRequest: 0,
  detailRequest: 0,
};

const $ = (id) => document.getElementById(id);

// Requests.

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = { error: text };
  }
  if (!response.ok) {
    const reason = data && data.error ? data.error : `HTTP ${response.status}`;
    throw new Error(reason);
  }
  return data;
}

function showMessage(text, kind) {
  const message = $("message");
  message.textContent = visible(text);
  message.dataset.kind = kind || "error";
  message.hidden = false;
}

async function act(work, success) {
  try {
    const result = await work();
    if (success) {
      const outcome = typeof success === "function" ? success(result) : success;
      // A success callback may return [text, kind] to report a partial failure.
      const [text, kind] = Array.isArray(outcome) ? outcome : [outcome, "info"];
      showMessage(text, kind);
    }
    await refreshJobs();
    return result;
  } catch (error) {
    showMessage(error.message, "error");
    return null;
  }
}

// Small DOM helpers.

function visible(text) {
  if (text === null || text === undefined) return "";
  return String(text).replace(INVISIBLE, (character) =>
    `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = visible(text);
  if (className) td.className = className;
  return td;
}

function stateCell(state) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "state";
  span.dataset.state = state;
  span.textContent = visible(state);
  td.appendChild(span);
  return td;
}

function button(text, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.addEventListener("click", (event) => {
    event.stopPropagation();
    onClick();
  });
  return element;
}

function formatTime(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "";
  return new Date(epochSeconds * 1000).toLocaleString();
}

function formatAge(seconds) {
  if (seconds < 120) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

// The snapshot: counts, chart, pool and registry.

function renderSnapshot(snapshot) {
  $("queue-name").textContent = `queue ${visible(snapshot.queue)}`;
  for (const state of STATES) $(`count-${state}`).textContent = String(snapshot.counts[state]);
  renderPool(snapshot.pool);
  renderRegistry(snapshot.workers, snapshot.time, snapshot.stopped_not_shown);
  renderChart(snapshot.throughput, snapshot.time);

  const counts = JSON.stringify(snapshot.counts);
  if (counts !== view.lastCounts) {
    view.lastCounts = counts;
    refreshJobs();
    if (view.selectedJob !== null) showJob(view.selectedJob);
  }
}

function renderPool(pool) {
  view.pool = pool;
  const badge = $("pool-state");
  badge.textContent = pool.running ? `running: ${pool.producers} producers, ${pool.consumers} consumers` : "stopped";
  for (const kind of ["producer", "consumer"]) {
    const toggle = $(`pause-${kind}`);
    const paused = pool.paused.includes(kind);
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = `${paused ? "Resume" : "Pause"} ${kind}s`;
  }
  const prod = $("scale-prod");
  const cons = $("scale-cons");
  if (document.activeElement !== prod && document.activeElement !== cons) {
    prod.value = String(pool.producers);
    cons.value = String(pool.consumers);
  }
  const rows = pool.workers.map((worker) => {
    const tr = document.createElement("tr");
    tr.append(cell(worker.id, "text"), cell(worker.kind), stateCell(worker.state), cell(worker.runs, "number"),
      cell(worker.successes, "number"), cell(worker.errors, "number"), cell(worker.last_error, "text"));
    return tr;
  });
  $("pool-workers").replaceChildren(...rows);
}

function renderRegistry(workers, now, stoppedNotShown) {
  const rows = workers.map((worker) => {
    const tr = document.createElement("tr");
    tr.append(cell(worker.id, "text"), cell(worker.kind), cell(worker.host, "text"), cell(worker.pid, "number"),
      stateCell(worker.lost ? "lost" : worker.state), cell(formatAge(now - worker.heartbeat_at)),
      cell(worker.runs, "number"), cell(worker.successes, "number"), cell(worker.errors, "number"));
    return tr;
  });
  $("registry").replaceChildren(...rows);
  const more = $("registry-more");
  more.textContent = stoppedNotShown ? `and ${stoppedNotShown} more stopped workers (GET /api/workers lists them)` : "";
  more.hidden = !stoppedNotShown;
}

function renderChart(throughput, now) {
  const canvas = $("chart");
  const context = canvas.getContext("2d");
  const width = canvas.width;
  const height = canvas.height;
  const interval = throughput.interval_s;
  const first = throughput.since;
  const count = Math.max(1, Math.floor((now - first) / interval) + 1);
  const done = new Array(count).fill(0);
  const failed = new Array(count).fill(0);
  for (const bucket of throughput.buckets) {
    const index = Math.round((bucket.start - first) / interval);
    if (index >= 0 && index < count) {
      done[index] = bucket.done;
      failed[index] = bucket.failed;
    }
  }
  const peak = Math.max(1, ...done.map((value, index) => value + failed[index]));
  const left = 40;
  const bottom = height - 18;
  const slot = (width - left - 4) / count;

  context.clearRect(0, 0, width, height);
  context.font = "11px system-ui, sans-serif";
  context.fillStyle = "#555";
  context.fillText(String(peak), 4, 12);
  context.fillText("0", 4, bottom);
  context.fillText(new Date(first * 1000).toLocaleTimeString(), left, height - 4);
  const end = new Date(now * 1000).toLocaleTimeString();
  context.fillText(end, width - 4 - context.measureText(end).width, height - 4);
  context.strokeStyle = "#d0d4da";
  context.beginPath();
  context.moveTo(left, bottom + 0.5);
  context.lineTo(width, bottom + 0.5);
  context.stroke();

  for (let index = 0; index < count; index += 1) {
    const x = left + index * slot + slot * 0.1;
    const barWidth = Math.max(1, slot * 0.8);
    const doneHeight = (done[index] / peak) * (bottom - 16);
    const failedHeight = (failed[index] / peak) * (bottom - 16);
    context.fillStyle = "#2e7d32";
    context.fillRect(x, bottom - doneHeight, barWidth, doneHeight);
    context.fillStyle = "#c62828";
    context.fillRect(x, bottom - doneHeight - failedHeight, barWidth, failedHeight);
  }
  canvas.dataset.done = String(done.reduce((a, b) => a + b, 0));
  canvas.dataset.failed = String(failed.reduce((a, b) => a + b, 0));
}

// The jobs table and the detail view.

async function refreshJobs() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(view.offset) });
  if (view.state) query.set("state", view.state);
  if (view.search) query.set("search", view.search);
  const request = ++view.jobsRequest;
  let page;
  try {
    page = await api("GET", `/api/jobs?${query}`);
  } catch (error) {
    if (request === view.jobsRequest) showMessage(error.message, "error");
    return;
  }
  if (request !== view.jobsRequest) return;
  const rows = page.jobs.map(jobRow);
  $("jobs").replaceChildren(...rows);
  const last = page.offset + page.jobs.length;
  $("page-info").textContent = page.jobs.length ? `jobs ${page.offset + 1} to ${last}` : "no jobs";
  $("page-prev").disabled = page.offset === 0;
  $("page-next").disabled = !page.has_more;
}

// Names how many failed jobs went back to the queue, and why the others did not.
function requeueSummary(result) {
  const rejected = Object.entries(result.rejected);
  const text = `requeued ${result.requeued.length} jobs`;
  if (!rejected.length) return [text, "info"];
  const [jobId, reason] = rejected[0];
  const more = rejected.length > 1 ? ` (and ${rejected.length - 1} more)` : "";
  return [`${text}, rejected ${rejected.length}: job ${jobId}: ${reason}${more}`, "error"];
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.id = String(job.id);
  tr.dataset.state = job.state;
  tr.dataset.selected = String(job.id === view.selectedJob);
  // payload_chars counts code points, and JavaScript's length counts UTF-16 units.
  const payload = job.payload_chars > Array.from(job.payload).length ? `${job.payload}…` : job.payload;
  const actions = document.createElement("td");
  if (job.state === "queued") {
    actions.appendChild(button("Cancel", "cancel", () => cancelJob(job.id)));
  } else if (job.state === "failed" || job.state === "cancelled") {
    actions.appendChild(button("Retry", "retry", () => requeueJob(job.id)));
  }
  tr.append(cell(job.id, "number"), stateCell(job.state), cell(job.attempts, "number"), cell(job.priority, "number"),
    cell(formatTime(job.created_at)), cell(payload, "text"), cell(job.outcome, "text"), actions);
  tr.addEventListener("click", () => showJob(job.id));
  return tr;
}

async function showJob(jobId) {
  const request = ++view.detailRequest;
  let job;
  try {
    job = await api("GET", `/api/jobs/${jobId}`);
  } catch (error) {
    if (request !== view.detailRequest) return;
    showMessage(error.message, "error");
    // A purged job would fail again on every update, so its detail view closes.
    if (view.selectedJob === jobId) closeDetail();
    return;
  }
  if (request !== view.detailRequest) return;

  view.selectedJob = job.id;
  $("detail").hidden = false;
  $("detail-id").textContent = String(job.id);
  const fields = [
    ["state", job.state], ["attempts", job.attempts], ["priority", job.priority], ["queue", job.queue],
    ["created", formatTime(job.created_at)], ["available from", formatTime(job.available_at)],
    ["started", formatTime(job.started_at)], ["finished", formatTime(job.finished_at)],
    ["lease until", formatTime(job.lease_expires_at)], ["worker", job.worker_id], ["unique key", job.unique_key],
  ];

  const items = [];
  for (const [name, value] of fields) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = visible(value);
    items.push(dt, dd);
  }
  $("detail-fields").replaceChildren(...items);

  $("detail-payload").textContent = visible(job.payload);
  $("detail-error").textContent = visible(job.last_error);
  $("detail-result").textContent = visible(job.result);
  $("detail-cancel").disabled = job.state !== "queued";
  $("detail-requeue").disabled = job.state !== "failed" && job.state !== "cancelled";
  for (const row of $("jobs").children) row.dataset.selected = String(row.dataset.id === String(job.id));
}

function closeDetail() {
  view.selectedJob = null;
  view.detailRequest += 1;
  $("detail").hidden = true;
}

function cancelJob(jobId) {
  return act(() => api("POST", `/api/jobs/${jobId}/cancel`), `job ${jobId} cancelled`)
    .then(() => view.selectedJob === jobId && showJob(jobId));
}

function requeueJob(jobId) {
  return act(() => api("POST", `/api/jobs/${jobId}/requeue`), `job ${jobId} queued again`)
    .then(() => view.selectedJob === jobId && showJob(jobId));
}

// Live updates.

function connectEvents() {
  if (view.events) view.events.close();
  const [interval, window] = $("interval").value.split(",");
  const source = new EventSource(`/api/events?interval_s=${interval}&window_s=${window}`);
  source.addEventListener("snapshot", (event) => {
    $("connection").dataset.live = "true";
    $("connection").textContent = "live";
    renderSnapshot(JSON.parse(event.data));
  });
  source.addEventListener("problem", (event) => {
    $("connection").dataset.live = "false";
    $("connection").textContent = "not updating";
    showMessage(JSON.parse(event.data).error, "error");
  });
  source.addEventListener("open", () => {
    $("connection").dataset.live = "true";
    $("connection").textContent = "live";
  });
  source.addEventListener("error", () => {
    $("connection").dataset.live = "false";
    $("connection").textContent = "reconnecting";
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => { if (view.events === source) connectEvents(); }, RECONNECT_AFTER_ERROR_MS);
    }
  });
  view.events = source;
}

// Controls.

function bindPoolControls() {
  $("pool-start").addEventListener("click", () => act(() => api("POST", "/api/pool/start"), "pool started"));
  $("pool-stop").addEventListener("click", () => act(() => api("POST", "/api/pool/stop"), "pool stopped"));
  for (const kind of ["producer", "consumer"]) {
    $(`pause-${kind}`).addEventListener("click", () => {
      const paused = view.pool && view.pool.paused.includes(kind);
      const verb = paused ? "resume" : "pause";
      act(() => api("POST", `/api/pool/${verb}`, { kind }), `${kind}s ${verb}d`)
        .then((pool) => pool && renderPool(pool));
    });
  }
  $("scale-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { n_prod: Number($("scale-prod").value), n_cons: Number($("scale-cons").value) };
    act(() => api("POST", "/api/pool/scale", body), "pool scaled").then((pool) => pool && renderPool(pool));
  });
}

function bindJobControls() {
  $("enqueue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const payloads = $("enqueue-payloads").value.split("\n").filter((line) => line.trim() !== "");
    const body = { payloads, priority: Number($("enqueue-priority").value || 0) };
    act(() => api("POST", "/api/jobs", body), (result) => `enqueued ${result.added} jobs`)
      .then((result) => { if (result) $("enqueue-payloads").value = ""; });
  });

  $("filter-state").addEventListener("change", () => {
    view.state = $("filter-state").value;
    view.offset = 0;
    refreshJobs();
  });
  let searchTimer = null;
  $("filter-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      view.search = $("filter-search").value;
      view.offset = 0;
      refreshJobs();
    }, 250);
  });

  $("page-prev").addEventListener("click", () => {
    view.offset = Math.max(0, view.offset - PAGE_SIZE);
    refreshJobs();
  });
  $("page-next").addEventListener("click", () => {
    view.offset += PAGE_SIZE;
    refreshJobs();
  });

  $("requeue-failed").addEventListener("click", () => act(() => api("POST", "/api/jobs/requeue-failed"),
    requeueSummary));
  $("purge").addEventListener("click", () => {
    const state = $("purge-state").value;
    const states = state ? [state] : ["done", "failed", "cancelled"];
    if (!window.confirm(`Delete every ${states.join(", ")} job of this queue?`)) return;
    act(() => api("POST", "/api/purge", { states }), (result) => `purged ${result.purged} jobs`);
  });
}

function bindDetailControls() {
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-cancel").addEventListener("click", () => view.selectedJob !== null && cancelJob(view.selectedJob));
  $("detail-requeue").addEventListener("click", () => view.selectedJob !== null && requeueJob(view.selectedJob));
}

bindPoolControls();
bindJobControls();
bindDetailControls();
$("interval").addEventListener("change", connectEvents);
connectEvents();
refreshJobs();
