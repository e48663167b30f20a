// ostracon review UI: polls the admin API (bearer token kept in sessionStorage) and renders
// the genealogy (cytoscape), the quarantine queue, the blocklist, agreement and audit log.
// Data is only ever inserted as text (never as HTML): message contents are untrusted.
import cytoscape from "./vendor/cytoscape.esm.min.js";

const POLL_MS = 2000;
const COLORS = { green: "#38a169", yellow: "#ecc94b", red: "#e53e3e" };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

// ------------------------------------------------------------------ API access

function token() { return sessionStorage.getItem("ostracon-token") || ""; }
function user() { return sessionStorage.getItem("ostracon-user") || ""; }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (user()) headers["X-Ostracon-User"] = user();
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { ...options, headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = JSON.stringify((await resp.json()).detail); } catch (_) { /* not JSON */ }
    const err = new Error(`${resp.status}: ${detail}`);
    err.status = resp.status;
    throw err;
  }
  return resp.json();
}

function setStatus(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.className = error ? "error" : "muted";
}

// ------------------------------------------------------------------ genealogy graph

const cy = cytoscape({
  container: $("#graph"),
  wheelSensitivity: 0.3,
  style: [
    { selector: "node[type='message']", style: {
      shape: "round-rectangle", "background-color": "#cbd5e0", width: 70, height: 26,
      label: "data(caption)", "font-size": 10, "text-valign": "center", color: "#1a202c" } },
    { selector: "node[type='message'][!delivered]", style: {
      "background-color": "#fbd38d", "border-width": 1, "border-color": "#c05621" } },
    { selector: "node[type='claim']", style: {
      shape: "ellipse", width: 26, height: 26, "background-color": "data(color)",
      "border-width": 1, "border-color": "#4a5568", label: "data(caption)", "font-size": 9,
      "text-valign": "bottom", "text-margin-y": 3, "text-wrap": "ellipsis",
      "text-max-width": 110 } },
    { selector: "node[?origin]", style: { "border-width": 4, "border-color": "#2b6cb0" } },
    { selector: "node[?convicted]", style: { "border-style": "dashed" } },
    { selector: "edge", style: {
      width: 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle",
      "arrow-scale": 0.8, "line-color": "#a0aec0", "target-arrow-color": "#a0aec0" } },
    { selector: "edge[kind='asserts']", style: { "line-style": "dotted", "target-arrow-shape": "none" } },
    { selector: "edge[kind='answers']", style: { "line-style": "dashed", "line-color": "#cbd5e0" } },
    { selector: "edge[kind='derives']", style: { "line-color": "#4a5568", "target-arrow-color": "#4a5568" } },
    { selector: "edge[kind='contradicts']", style: {
      "line-color": "#e53e3e", "target-arrow-color": "#e53e3e", "line-style": "dashed" } },
    { selector: ".faded", style: { opacity: 0.18 } },
    { selector: "node.lineage", style: { "border-width": 5, "border-color": "#805ad5", "z-index": 10 } },
    { selector: "edge.lineage", style: {
      "line-color": "#805ad5", "target-arrow-color": "#805ad5", width: 3, "z-index": 10 } },
    { selector: ":selected", style: { "overlay-color": "#805ad5", "overlay-opacity": 0.25 } },
  ],
});
window.ostraconGraph = cy; // for tests and the browser console

let graphKey = "";
let selected = null;

// Timeline layout: messages left to right in conversation order, their claims beneath.
function place(nodes) {
  const messages = nodes.filter((n) => n.type === "message");
  messages.sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
  const column = new Map(messages.map((m, i) => [m.message, i]));
  const rows = new Map();
  const pos = {};
  for (const m of messages) pos[m.id] = { x: column.get(m.message) * 120, y: 0 };
  let spare = messages.length;
  for (const n of nodes.filter((n) => n.type === "claim")) {
    let col = column.get(n.message);
    if (col === undefined) { col = spare++; column.set(n.message, col); }
    const row = (rows.get(col) || 0) + 1;
    rows.set(col, row);
    pos[n.id] = { x: col * 120, y: row * 70 };
  }
  return pos;
}

function renderGraph(graph) {
  const key = JSON.stringify([graph.nodes.map((n) => [n.id, n.label, n.delivered]), graph.edges.length]);
  if (key === graphKey) return;
  graphKey = key;
  const pos = place(graph.nodes);
  const elements = graph.nodes.map((n) => ({
    group: "nodes",
    data: { ...n, color: COLORS[n.label] || "#cbd5e0",
      caption: n.type === "claim" ? `${n.key} = ${n.value}` : `${n.sender} ${n.message}` },
    position: pos[n.id],
  }));
  for (const e of graph.edges) {
    elements.push({ group: "edges", data: { id: `${e.source}|${e.kind}|${e.target}`, ...e } });
  }
  cy.elements().remove();
  cy.add(elements);
  cy.fit(undefined, 20);
  if (selected && cy.getElementById(selected).length) highlight(cy.getElementById(selected));
}

// Lineage of a claim: the earlier claims it derives from, transitively, up to its origins.
function lineageOf(node) {
  const seen = cy.collection().union(node);
  let frontier = node;
  while (frontier.length) {
    const edges = frontier.outgoers("edge[kind='derives']");
    const next = edges.targets().difference(seen);
    seen.merge(edges).merge(next);
    frontier = next;
  }
  return seen;
}

function highlight(node) {
  cy.elements().removeClass("lineage faded");
  if (!node || node.data("type") !== "claim") return;
  const line = lineageOf(node);
  cy.elements().difference(line).addClass("faded");
  line.addClass("lineage");
  showDetails(node.data(), line.nodes().length - 1);
}

function showDetails(d, ancestors) {
  const box = $("#details");
  box.replaceChildren(
    el("h3", {}, `${d.key} = ${d.value}`),
    el("dl", {},
      el("dt", {}, "label"), el("dd", {}, d.label + (d.convicted ? " (convicted)" : "")),
      el("dt", {}, "claim"), el("dd", {}, d.id),
      el("dt", {}, "sender"), el("dd", {}, d.sender),
      el("dt", {}, "grounded"), el("dd", {}, d.grounded ? "yes" : "no"),
      el("dt", {}, "origin"), el("dd", {}, d.origin ? "yes: starts its lineage" : "no"),
      el("dt", {}, "origins"), el("dd", {}, (d.origins || []).join(", ")),
      el("dt", {}, "lineage shown"), el("dd", {}, `${ancestors} earlier claim(s)`),
      el("dt", {}, "depth"), el("dd", {}, d.depth)),
  );
}

cy.on("tap", "node", (evt) => { selected = evt.target.id(); highlight(evt.target); });
cy.on("tap", (evt) => { if (evt.target === cy) { selected = null; highlight(null); } });

// ------------------------------------------------------------------ tables

function reasonFor(row) {
  const input = row.querySelector("input.reason");
  const reason = input.value.trim();
  if (!reason) { input.focus(); setStatus("a reason is required", true); return null; }
  return reason;
}

async function act(path, body, method = "POST") {
  try {
    await api(path, { method, body });
    setStatus(`done: ${method} ${path}`);
  } catch (err) {
    setStatus(err.message, true);
  }
  await refresh();
}

function renderQueue(data) {
  $("#held-count").textContent = data.total;
  const rows = data.items.map((h) => {
    const row = el("tr", { "data-decision": h.decision_id },
      el("td", {}, new Date(h.at * 1000).toLocaleTimeString()),
      el("td", {}, h.conversation),
      el("td", {}, h.sender),
      el("td", {}, el("span", { class: `badge v-${h.verdict}` }, h.verdict)),
      el("td", {}, h.reason),
      el("td", { class: "content" }, h.content),
      el("td", {}, el("input", { class: "reason", placeholder: "reason (required)" }),
        el("button", { class: "release", onclick: () => {
          const r = reasonFor(row);
          if (r) act(`/api/quarantine/${encodeURIComponent(h.decision_id)}/release`, { reason: r });
        } }, "Release"),
        el("button", { class: "deny", onclick: () => {
          const r = reasonFor(row);
          if (r) act(`/api/quarantine/${encodeURIComponent(h.decision_id)}/deny`, { reason: r });
        } }, "Deny")),
    );
    return row;
  });
  keepInputs($("#quarantine tbody"), rows);
}

// Re-rendering must not wipe a reason being typed: carry inputs over by row key.
function keepInputs(tbody, rows) {
  const typed = new Map();
  for (const r of tbody.querySelectorAll("tr[data-decision]")) {
    const input = r.querySelector("input.reason");
    if (input && input.value) typed.set(r.dataset.decision, [input.value, input === document.activeElement]);
  }
  tbody.replaceChildren(...rows);
  for (const r of rows) {
    const kept = typed.get(r.dataset.decision);
    if (!kept) continue;
    const input = r.querySelector("input.reason");
    input.value = kept[0];
    if (kept[1]) input.focus();
  }
}

function renderBlocklist(entries) {
  const rows = entries.map((b) => {
    const row = el("tr", { "data-decision": `agent:${b.agent}` },
      el("td", {}, b.agent), el("td", {}, b.reason),
      el("td", {}, el("input", { class: "reason", placeholder: "reason (required)" }),
        el("button", { onclick: () => {
          const r = reasonFor(row);
          if (r) act(`/api/blocklist/${encodeURIComponent(b.agent)}`, { reason: r }, "DELETE");
        } }, "Remove")));
    return row;
  });
  keepInputs($("#blocklist tbody"), rows);
}

function renderAgreement(data) {
  $("#r").textContent = data && data.r != null ? `R = ${data.r.toFixed(2)}` : "";
  const rows = (data ? data.keys : []).map((k) => el("tr", {},
    el("td", {}, k.key),
    el("td", {}, Object.entries(k.values).map(([v, agents]) => `${v} (${agents.join(", ")})`).join("; ")),
    el("td", {}, `${Math.round(k.ratio * 100)}%`)));
  $("#agreement tbody").replaceChildren(...rows);
}

function renderAudit(events) {
  const what = (e) => {
    if (e.type === "quarantine") return `${e.action} ${e.message_id} (${e.conversation})`;
    if (e.type === "block") return `block ${e.agent}`;
    if (e.type === "unblock") return `unblock ${e.agent}`;
    return `${e.type}`;
  };
  $("#audit tbody").replaceChildren(...events.map((e) => el("tr", {},
    el("td", {}, new Date(e.at * 1000).toLocaleString()), el("td", {}, e.by),
    el("td", {}, what(e)), el("td", {}, e.why))));
}

// ------------------------------------------------------------------ polling

function renderConversations(list) {
  const sel = $("#conversation");
  const current = sel.value || sessionStorage.getItem("ostracon-conversation") || "";
  const names = list.map((c) => c.conversation);
  if (JSON.stringify(names) !== JSON.stringify([...sel.options].map((o) => o.value))) {
    sel.replaceChildren(...list.map((c) =>
      el("option", { value: c.conversation }, `${c.conversation} (${c.messages} msgs, ${c.claims} claims)`)));
  }
  if (names.includes(current)) sel.value = current;
  return sel.value;
}

let ticks = 0;
let busy = false;
let again = false; // a refresh asked for while one runs (a new token, an action) runs next

async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  again = false;
  try {
    const [held, blocked, convs] = await Promise.all([
      api("/api/quarantine?limit=200"), api("/api/blocklist"), api("/api/conversations?limit=100")]);
    renderQueue(held);
    renderBlocklist(blocked);
    const conv = renderConversations(convs);
    if (conv) {
      const around = $("#around").value.trim();
      // 600 nodes: enough to read, and cheap for the sidecar (the graph is built on its loop)
      const q = new URLSearchParams({ conversation: conv, limit: "600" });
      if (around) q.set("around", around);
      const [graph, agree] = await Promise.all([
        api(`/api/genealogy?${q}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
        api(`/api/agreement?${new URLSearchParams({ conversation: conv })}`)
          .catch((e) => (e.status === 404 ? null : Promise.reject(e)))]);
      if (graph) renderGraph(graph);
      renderAgreement(agree);
    }
    if (ticks++ % 3 === 0) renderAudit(await api("/api/audit?limit=200"));
    setStatus(`connected · ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus(err.status === 401 ? "enter the API token" : err.message, true);
  } finally {
    busy = false;
    if (again) refresh();
  }
}

$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("ostracon-token", $("#token").value.trim());
  sessionStorage.setItem("ostracon-user", $("#user").value.trim());
  setStatus("connecting…");
  ticks = 0;
  refresh();
});
$("#block-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("/api/blocklist", { agent: $("#block-agent").value.trim(), reason: $("#block-reason").value.trim() });
  $("#block-agent").value = "";
  $("#block-reason").value = "";
});
$("#conversation").addEventListener("change", () => {
  sessionStorage.setItem("ostracon-conversation", $("#conversation").value);
  graphKey = "";
  refresh();
});
$("#around").addEventListener("change", () => { graphKey = ""; refresh(); });

// `ostracon demo` prints a link with the token in the fragment (never sent to a server).
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  sessionStorage.setItem("ostracon-token", fromLink);
  history.replaceState(null, "", location.pathname);
}
$("#token").value = token();
$("#user").value = user();
refresh();
setInterval(refresh, POLL_MS);
