// dpgate's browser console: one page over the /v1 JSON API. The login is
// kept in this tab's sessionStorage only and sent as HTTP Basic.
"use strict";

const $ = (id) => document.getElementById(id);
let auth = sessionStorage.getItem("dpgate-auth");

async function api(method, path, body) {
  const headers = { "Authorization": auth };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({
    code: "08P01", message: "the server sent something that is not JSON", hint: "",
  }));
  return { ok: response.ok, status: response.status, data };
}

function text(tag, content, cls) {
  const e = document.createElement(tag);
  e.textContent = content;
  if (cls) e.className = cls;
  return e;
}

function showError(error) {
  const box = $("error");
  box.querySelector(".code").textContent = error.code || "";
  box.querySelector(".message").textContent = error.message || "";
  box.querySelector(".hint").textContent = error.hint ? "Hint: " + error.hint : "";
  box.hidden = false;
}

async function login(event) {
  event.preventDefault();
  const user = $("login-user").value;
  auth = "Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(user + ":" + $("login-password").value)));
  const r = await api("GET", "/v1/budget");
  if (!r.ok) {
    $("login-error").textContent = r.data.message + (r.data.hint ? " — " + r.data.hint : "");
    $("login-error").hidden = false;
    auth = null;
    return;
  }
  sessionStorage.setItem("dpgate-auth", auth);
  start();
}

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  await Promise.all([loadBudget(), loadTables(), loadHistory()]);
}

async function loadBudget() {
  const r = await api("GET", "/v1/budget");
  if (!r.ok) {
    if (r.status === 401) { sessionStorage.removeItem("dpgate-auth"); location.reload(); }
    return;
  }
  const b = r.data;
  $("whoami").textContent = b.user;
  $("whoami").hidden = false;
  $("budget-remaining").textContent = round(b.epsilon.remaining);
  $("budget-limit").textContent = round(b.epsilon.limit);
  const share = b.epsilon.limit > 0 ? b.epsilon.remaining / b.epsilon.limit : 0;
  $("budget-bar").setAttribute("width", String(Math.max(0, Math.min(1, share)) * 200));
  $("budget").dataset.remaining = String(b.epsilon.remaining);
  if (!$("epsilon").value) $("epsilon").placeholder = String(b.default_epsilon);
}

async function loadTables() {
  const r = await api("GET", "/v1/tables");
  const list = $("tables");
  list.replaceChildren();
  if (!r.ok) return;
  for (const t of r.data.tables) {
    const li = text("li", "");
    li.append(text("strong", t.name));
    li.append(text("div", t.columns.map((c) => c.name + " " + c.type).join(", "), "cols"));
    li.title = t.public ? "public table" : "privacy unit: " + (t.privacy_unit || "each row");
    li.addEventListener("click", () => { $("sql").value = "SELECT COUNT(*) FROM " + t.name; });
    list.append(li);
  }
}

async function loadHistory() {
  const r = await api("GET", "/v1/queries?limit=20");
  const list = $("history");
  list.replaceChildren();
  if (!r.ok) return;
  for (const q of r.data.queries) {
    const cost = q.cost.epsilon > 0 ? " (ε " + round(q.cost.epsilon) + ")" : "";
    list.append(text("li", q.outcome + cost + ": " + q.statement));
  }
}

function round(x) {
  return Number.isFinite(x) ? String(Math.round(x * 1e6) / 1e6) : String(x);
}

function request() {
  const body = { sql: $("sql").value };
  const eps = parseFloat($("epsilon").value);
  if (Number.isFinite(eps)) body.epsilon = eps;
  return body;
}

async function run() {
  clear();
  const r = await api("POST", "/v1/query", request());
  if (!r.ok) {
    showError(r.data);
  } else {
    render(r.data);
  }
  await Promise.all([loadBudget(), loadHistory()]);
}

async function explain() {
  clear();
  const r = await api("POST", "/v1/explain", request());
  if (!r.ok) { showError(r.data); return; }
  $("plan").textContent = r.data.lines.join("\n");
  $("plan").hidden = false;
}

function clear() {
  $("error").hidden = true;
  $("plan").hidden = true;
  $("meta").textContent = "";
  $("chart").replaceChildren();
  $("result").replaceChildren();
}

function render(answer) {
  const cost = answer.repeat
    ? "a repeat of an earlier release, at no cost"
    : "cost ε = " + round(answer.cost.epsilon) + (answer.cost.delta > 0 ? ", δ = " + answer.cost.delta : "");
  const widths = answer.accuracy.map((a) => a.column + " ±" + round(a.half_width)).join(", ");
  $("meta").textContent = cost + (widths ? "; " + Math.round((answer.accuracy[0].confidence) * 100) + "% half-widths: " + widths : "");
  const table = $("result");
  const head = document.createElement("tr");
  for (const c of answer.columns) head.append(text("th", c.name));
  table.append(head);
  const byColumn = new Map(answer.accuracy.map((a) => [a.column, a]));
  answer.rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    row.forEach((v, j) => {
      const acc = byColumn.get(answer.columns[j].name);
      const w = acc && acc.half_widths[i];
      const cell = text("td", v === null ? "NULL" : typeof v === "number" ? round(v) : String(v));
      if (w != null) cell.title = "±" + round(w);
      tr.append(cell);
    });
    table.append(tr);
  });
  chart(answer);
}

// A bar chart of the first noisy numeric column by the first text column,
// each bar with its interval as an error bar.
function chart(answer) {
  if (answer.rows.length < 2) return;
  const key = answer.columns.findIndex((c) => c.type === "text" || c.type === "boolean");
  const value = answer.columns.findIndex((c) => byName(answer, c.name));
  if (key < 0 || value < 0) return;
  const acc = byName(answer, answer.columns[value].name);
  const points = answer.rows.map((r, i) => ({
    label: String(r[key]), v: Number(r[value]), w: Number(acc.half_widths[i] || 0),
  })).filter((p) => Number.isFinite(p.v));
  const top = Math.max(...points.map((p) => p.v + p.w), 0) || 1;
  const bottom = Math.min(...points.map((p) => p.v - p.w), 0);
  const W = 60 * points.length + 40, H = 220, base = 190;
  const y = (v) => base - ((v - bottom) / (top - bottom)) * 170;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("width", String(W));
  const el = (name, attrs, content) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (content !== undefined) e.textContent = content;
    svg.append(e);
    return e;
  };
  points.forEach((p, i) => {
    const x = 30 + i * 60;
    el("rect", { class: "bar", x, y: Math.min(y(p.v), y(0)), width: 40, height: Math.abs(y(0) - y(p.v)) })
      .append(Object.assign(document.createElementNS(ns, "title"), { textContent: p.label + ": " + round(p.v) + " ±" + round(p.w) }));
    el("line", { class: "errorbar", x1: x + 20, x2: x + 20, y1: y(p.v - p.w), y2: y(p.v + p.w) });
    el("line", { class: "errorbar", x1: x + 12, x2: x + 28, y1: y(p.v + p.w), y2: y(p.v + p.w) });
    el("line", { class: "errorbar", x1: x + 12, x2: x + 28, y1: y(p.v - p.w), y2: y(p.v - p.w) });
    el("text", { class: "axis", x: x + 20, y: base + 16, "text-anchor": "middle" }, p.label);
  });
  el("text", { class: "axis", x: 4, y: 12 }, answer.columns[value].name);
  $("chart").append(svg);
}

function byName(answer, name) {
  return answer.accuracy.find((a) => a.column === name);
}

$("login-form").addEventListener("submit", login);
$("run").addEventListener("click", run);
$("explain").addEventListener("click", explain);
$("sql").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
if (auth) start();
