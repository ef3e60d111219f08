// The calculator and the list of recent tasks at `/`.
import { api, el, Problem, token } from "./api.js";

const PAGE_SIZE = 20;
const PARALLEL_WAITS = 4; // browsers open about six connections per host; leave some for the rest

const form = document.getElementById("calculate");
const input = document.getElementById("expression");
const formError = document.getElementById("form-error");
const results = document.getElementById("results");
const maxBatch = Number(form.dataset.maxBatch);
const waitSeconds = Math.min(20, Number(form.dataset.maxWait));

const table = document.getElementById("tasks");
const rows = table.tBodies[0];
const openStatuses = new Set(table.dataset.openStatuses.split(","));
const filter = document.getElementById("status-filter");
const more = document.getElementById("more");
const tasksError = document.getElementById("tasks-error");
const tasksEmpty = document.getElementById("tasks-empty");
let nextCursor = null;

function show(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

function milliseconds(from, to) {
  if (!from || !to) return null;
  return Math.max(0, Date.parse(to) - Date.parse(from));
}

function timings(task) {
  const parts = [];
  const queued = milliseconds(task.created_at, task.started_at);
  const ran = milliseconds(task.started_at, task.finished_at);
  const total = milliseconds(task.created_at, task.finished_at);
  if (queued !== null) parts.push(`queued ${queued} ms`);
  if (ran !== null) parts.push(`ran ${ran} ms`);
  if (total !== null) parts.push(`total ${total} ms`);
  return parts.join(" · ");
}

// --- Calculate ---------------------------------------------------------------------------------

function resultCard(task) {
  const card = el("li", { class: "result", "data-task-id": task.id });
  fillCard(card, task);
  return card;
}

function fillCard(card, task) {
  card.dataset.status = task.status;
  const line = el("p", { class: "line" }, el("code", { class: "expression" }, task.expression));
  if (task.status === "COMPLETED") line.append(" = ", el("output", { class: "value" }, String(task.result)));
  else if (openStatuses.has(task.status)) line.append(" = ", el("span", { class: "pending" }, "…"));
  const meta = el("p", { class: "meta" },
    el("a", { href: `/tasks/${task.id}`, class: "task-link" }, `#${task.id}`), " · ",
    el("span", { class: `status status-${task.status.toLowerCase()}` }, task.status),
    timings(task) ? " · " + timings(task) : "");
  card.replaceChildren(line, meta);
  if (task.status === "FAILED") {
    card.append(el("p", { class: "failure" }, el("code", { class: "error-code" }, task.error_code), " ",
      el("span", { class: "error-message" }, task.error_message)));
  }
}

async function follow(card, id) {
  // Long-poll until the task is final: each call answers the moment a worker finishes it.
  for (;;) {
    try {
      const task = await api.wait(id, waitSeconds);
      fillCard(card, task);
      if (!openStatuses.has(task.status)) return;
    } catch (error) {
      card.append(el("p", { class: "problem" }, error.message));
      return;
    }
  }
}

async function followAll(pairs) {
  const queue = pairs.slice();
  const runners = Array.from({ length: Math.min(PARALLEL_WAITS, queue.length) }, async () => {
    while (queue.length) {
      const [card, id] = queue.shift();
      await follow(card, id);
    }
  });
  await Promise.all(runners);
}

async function calculate() {
  const lines = input.value.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  if (!lines.length) {
    show(formError, "Type an expression, such as 6 * 7.");
    return;
  }
  if (lines.length > maxBatch) {
    show(formError, `${lines.length} lines: send at most ${maxBatch} at once.`);
    return;
  }
  show(formError, "");
  let answer;
  try {
    answer = await api.submit(lines);
  } catch (error) {
    show(formError, problemText(error));
    return;
  }
  input.value = "";
  input.rows = 1;
  const tasks = Array.isArray(answer) ? answer : [answer];
  const pairs = tasks.map((task) => [resultCard(task), task.id]);
  results.prepend(...pairs.map(([card]) => card));
  await followAll(pairs);
  refresh();
}

function problemText(error) {
  if (!(error instanceof Problem)) return String(error);
  if (error.status === 401) return "This dalc needs a valid API token: enter it above.";
  const details = (error.body.errors || []).map((e) => `${e.pointer || e.parameter || ""}: ${e.detail}`);
  return [`${error.message} (${error.code})`, ...details.slice(1, 4)].join(" ");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  calculate();
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

// Grow the box with its lines, so a pasted batch can be read before it is sent.
input.addEventListener("input", () => {
  input.rows = Math.min(10, Math.max(1, input.value.split("\n").length));
});

// --- Follow ---------------------------------------------------------------------------------------

function taskRow(task) {
  const actions = el("td", { class: "actions" });
  if (openStatuses.has(task.status)) {
    const button = el("button", { type: "button", class: "cancel", "aria-label": `Cancel task ${task.id}` }, "Cancel");
    button.addEventListener("click", () => cancel(task.id, button));
    actions.append(button);
  }
  const result = task.status === "COMPLETED" ? String(task.result)
    : task.status === "FAILED" ? task.error_code : "";
  return el("tr", { "data-task-id": task.id, "data-status": task.status },
    el("td", {}, el("a", { href: `/tasks/${task.id}` }, String(task.id))),
    el("td", { class: "expression" }, el("code", {}, task.expression)),
    el("td", {}, el("span", { class: `status status-${task.status.toLowerCase()}` }, task.status)),
    el("td", { class: "result-cell" }, result),
    el("td", { class: "created" }, task.created_at.replace("T", " ").slice(0, 19)),
    actions);
}

async function cancel(id, button) {
  button.disabled = true;
  try {
    const task = await api.cancel(id);
    rows.querySelector(`tr[data-task-id="${task.id}"]`)?.replaceWith(taskRow(task));
    show(tasksError, "");
  } catch (error) {
    show(tasksError, problemText(error));
    refresh();
  }
}

async function load(append) {
  try {
    const page = await api.list(filter.value, PAGE_SIZE, append ? nextCursor : null);
    const fresh = page.items.map(taskRow);
    if (append) rows.append(...fresh);
    else rows.replaceChildren(...fresh);
    nextCursor = page.next;
    more.hidden = !nextCursor;
    tasksEmpty.hidden = rows.children.length > 0;
    show(tasksError, "");
  } catch (error) {
    show(tasksError, problemText(error));
  }
}

function refresh() {
  return load(false);
}

filter.addEventListener("change", refresh);
document.getElementById("refresh").addEventListener("click", refresh);
more.addEventListener("click", () => load(true));

// --- The API token, when one is required ----------------------------------------------------------

const tokenForm = document.getElementById("token-form");
const tokenState = document.getElementById("token-state");

function showTokenState() {
  tokenState.textContent = token.get() ? "A token is set for this tab." : "No token is set yet.";
}

if (tokenForm) {
  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const field = document.getElementById("token");
    token.set(field.value.trim());
    field.value = "";
    showTokenState();
    refresh();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    token.set(null);
    rows.replaceChildren();
    showTokenState();
  });
  showTokenState();
}
// Without a token, a dalc that requires one would only answer 401: ask first.
if (!tokenForm || token.get()) refresh();
