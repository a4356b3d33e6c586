// The status page: plain DOM, no framework, everything from this daemon's own API.
"use strict";

const TOKEN_KEY = "scriptd.token";
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};

const state = {
  page: 1, lastPage: 1, events: new Map(), reactions: new Map(), script: null, week: null, live: null, samples: [],
  // Which clock the page shows times in: "local" (the browser's zone), "script" (the zone the
  // daemon evaluates timetables in) or "utc".
  zoneMode: "local", scriptZone: "UTC",
  deliveries: new Map(), deliveryScripts: [], deliveryTimer: null,
};

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = { "Authorization": `Bearer ${token()}`, "X-Client": "web" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) { signOut("The token was refused (revoked, expired or mistyped)."); }
  return { status: r.status, body };
}

function errorText(res) {
  if (!res.body) return `HTTP ${res.status}`;
  const fields = res.body.errors ? Object.entries(res.body.errors).map(([k, v]) => `${k}: ${v.join(" ")}`) : [];
  return [res.body.message, ...fields].filter(Boolean).join(" ");
}

// ---- sign in -------------------------------------------------------------------------

async function signIn(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
  const res = await api("/scripts?per_page=1");
  if (res.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#sign-in-error").textContent = res.status === 403 ? "This account may not view scripts." : `Sign-in failed: ${errorText(res)}`;
    return;
  }
  $("#sign-in-error").textContent = "";
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  await loadMe();
  await loadCatalogs();
  await loadScripts();
  connectLive();
  pollDeliveries();
  refreshHealth();
}

// The header: whose token this is and what it may do (`GET /me`).
async function loadMe() {
  const res = await api("/me");
  const who = $("#who");
  if (res.status !== 200 || !res.body || !res.body.data) { who.textContent = "Signed in."; return; }
  const u = res.body.data;
  const perms = (u.permissions || []).map((p) => p.display_name || p.name);
  who.replaceChildren("Signed in as ", el("strong", { id: "who-login", text: u.login }), ` (${u.name})`,
    el("span", { id: "who-permissions", class: "perms", text: perms.length ? ` · may: ${perms.join(", ")}` : " · no permissions" }));
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.live) { state.live.close(); state.live = null; }
  if (state.deliveryTimer) { clearTimeout(state.deliveryTimer); state.deliveryTimer = null; }
  state.deliveries.clear();
  $("#app").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  $("#sign-in-error").textContent = message || "";
  $("#token").focus();
}

async function loadCatalogs() {
  const [ev, re] = await Promise.all([api("/events"), api("/reactions")]);
  for (const e of (ev.body && ev.body.data) || []) state.events.set(e.id, e);
  for (const r of (re.body && re.body.data) || []) state.reactions.set(r.id, r);
  for (const select of document.querySelectorAll("select.events")) {
    const keepAny = select.form.id === "filters";
    select.replaceChildren(...(keepAny ? [el("option", { value: "", text: "any" })] : []),
      ...[...state.events.values()].map((e) => el("option", { value: e.id, text: `${e.description} (${e.name})` })));
  }
  for (const select of document.querySelectorAll("select.reactions")) {
    select.replaceChildren(el("option", { value: "", text: "any" }),
      ...[...state.reactions.values()].map((r) => el("option", { value: r.id, text: r.description })));
  }
}

// ---- tabs ----------------------------------------------------------------------------

function showTab(tab) {
  for (const t of document.querySelectorAll("[role=tab]")) {
    const on = t === tab;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
  }
  if (tab.id === "tab-health") refreshHealth();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const t of tabs) {
    t.addEventListener("click", () => showTab(t));
    t.addEventListener("keydown", (e) => {
      const i = tabs.indexOf(t);
      let next = null;
      if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      if (e.key === "ArrowLeft") next = tabs[(i + tabs.length - 1) % tabs.length];
      if (e.key === "Home") next = tabs[0];
      if (e.key === "End") next = tabs[tabs.length - 1];
      if (next) { e.preventDefault(); showTab(next); next.focus(); }
    });
  }
}

// ---- scripts and the week grid --------------------------------------------------------

async function loadScripts() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters"))) if (String(v).trim() !== "") params.set(k, String(v).trim());
  params.set("page", state.page);
  params.set("per_page", 25);
  const res = await api(`/scripts?${params}`);
  const tbody = $("#scripts tbody");
  if (res.status !== 200) { $("#scripts-count").textContent = errorText(res); tbody.replaceChildren(); return; }
  const { data, meta } = res.body;
  state.lastPage = meta.last_page;
  $("#scripts-count").textContent = `${meta.total} script${meta.total === 1 ? "" : "s"} · page ${meta.current_page} of ${meta.last_page}`;
  $("#prev-page").disabled = state.page <= 1;
  $("#next-page").disabled = state.page >= state.lastPage;
  tbody.replaceChildren(...data.map((s) => {
    const week = el("button", { type: "button", text: "Week", "aria-label": `Week of script ${s.id} ${s.title}` });
    week.addEventListener("click", () => openWeek(s));
    return el("tr", { "data-script-id": s.id },
      el("td", { text: s.id }),
      el("td", { text: s.title }),
      el("td", { text: s.event ? s.event.description : s.event_id }),
      el("td", { text: s.reaction ? s.reaction.description : s.reaction_id }),
      el("td", { text: s.cameras === null || s.cameras === undefined ? "all" : s.cameras.join(", ") }),
      el("td", { text: s.status }),
      el("td", {}, week));
  }));
}

// ---- live reactions -----------------------------------------------------------------

async function connectLive() {
  if (!token()) return;
  if (state.live) { state.live.close(); state.live = null; }
  const res = await api("/reactions/stream/ticket", { method: "POST", body: {} });
  if (res.status !== 201) { $("#live-state").textContent = `Cannot open the stream: ${errorText(res)}`; setTimeout(connectLive, 5000); return; }
  const es = new EventSource(`/api/v1/reactions/stream?ticket=${encodeURIComponent(res.body.ticket)}`);
  state.live = es;
  es.addEventListener("open", () => { $("#live-state").textContent = "Connected: reactions for this account appear here as they are delivered."; });
  es.addEventListener("reaction", (e) => addReaction(JSON.parse(e.data)));
  es.addEventListener("lagged", (e) => addNote(`${e.data} reactions skipped (this page fell behind).`));
  es.addEventListener("shutdown", () => addNote("The daemon is stopping."));
  es.addEventListener("error", () => {
    // A ticket is good once: reconnect with a new one.
    es.close();
    if (state.live === es) {
      state.live = null;
      $("#live-state").textContent = "Disconnected; reconnecting…";
      setTimeout(connectLive, 2000);
    }
  });
}

function addReaction(p) {
  const list = $("#live-list");
  const when = new Date(p.occurred_at);
  list.prepend(el("li", { "data-occurrence-id": p.occurrence_id, "data-delivery-id": p.delivery_id },
    el("time", { dateTime: p.occurred_at, text: `${clock(when.getTime(), true)} ${zoneAbbrev()}` }), " ",
    el("strong", { text: p.script ? p.script.title : "" }), ` — ${p.event ? p.event.description : ""}, camera ${p.camera_id} (${p.reaction}) `,
    el("code", { text: p.occurrence_id })));
  while (list.children.length > 200) list.lastChild.remove();
}

function addNote(text) { $("#live-list").prepend(el("li", { class: "note", text })); }

// ---- Telegram and webhook deliveries (polled) ----------------------------------------------
//
// The reaction stream carries pushes only. Telegram messages and webhook calls are read from
// `GET /scripts/{id}/deliveries` of the caller's scripts with those reactions (the first
// DELIVERY_SCRIPTS of them), every DELIVERY_POLL_MS, so a delivery's state (pending, sent,
// failed, expired, coalesced) changes here as it changes in the outbox.

const DELIVERY_REACTIONS = ["telegram-message", "webhook"];
const DELIVERY_SCRIPTS = 20;
const DELIVERY_POLL_MS = 5000;
const DELIVERY_ROWS = 100;

async function deliveryScripts() {
  const ids = [...state.reactions.values()].filter((r) => DELIVERY_REACTIONS.includes(r.name)).map((r) => r.id);
  const found = [];
  for (const id of ids) {
    const res = await api(`/scripts?reaction_id=${id}&per_page=${DELIVERY_SCRIPTS}`);
    if (res.status === 200) found.push(...res.body.data);
  }
  return found.slice(0, DELIVERY_SCRIPTS);
}

async function pollDeliveries() {
  if (!token()) return;
  if (state.deliveryTimer) clearTimeout(state.deliveryTimer);
  try {
    state.deliveryScripts = await deliveryScripts();
    const lists = await Promise.all(state.deliveryScripts.map((s) => api(`/scripts/${s.id}/deliveries?limit=20`).then((r) => [s, r])));
    for (const [script, res] of lists) {
      if (res.status !== 200) continue;
      for (const d of res.body.data) {
        const old = state.deliveries.get(d.id);
        state.deliveries.set(d.id, { ...d, script, changed: old ? old.state !== d.state : false });
      }
    }
    const kept = [...state.deliveries.values()].sort((a, b) => (b.created_at + b.id).localeCompare(a.created_at + a.id)).slice(0, DELIVERY_ROWS);
    state.deliveries = new Map(kept.map((d) => [d.id, d]));
    $("#deliveries-state").textContent = state.deliveryScripts.length
      ? `Telegram and webhook deliveries of ${state.deliveryScripts.length} script${state.deliveryScripts.length === 1 ? "" : "s"}, refreshed every ${DELIVERY_POLL_MS / 1000} s.`
      : "No script of yours sends Telegram messages or calls webhooks.";
    renderDeliveries();
  } catch (err) {
    $("#deliveries-state").textContent = `Cannot read deliveries: ${err}`;
  }
  state.deliveryTimer = setTimeout(pollDeliveries, DELIVERY_POLL_MS);
}

function renderDeliveries() {
  const tbody = $("#deliveries tbody");
  if (!tbody) return;
  tbody.replaceChildren(...[...state.deliveries.values()].map((d) => {
    const at = Date.parse(`${d.created_at.replace(" ", "T")}Z`);
    const kind = d.reaction === "webhook" ? "webhook" : "Telegram";
    const stateText = d.state === "coalesced" && d.coalesced_into ? `coalesced into ${d.coalesced_into}` : d.state;
    return el("tr", { class: `state-${d.state}${d.changed ? " changed" : ""}`, "data-delivery-id": d.id, "data-state": d.state },
      el("td", {}, el("time", { dateTime: new Date(at).toISOString(), text: Number.isNaN(at) ? d.created_at : `${dayLabel(at)} ${clock(at, true)}` })),
      el("td", { text: kind }),
      el("td", { text: `${d.script.id} ${d.script.title}` }),
      el("td", { text: d.recipient }),
      el("td", { class: "state", text: stateText }),
      el("td", { text: d.attempts }),
      el("td", { text: d.last_error || "" }));
  }));
}


// ---- explain and occurrences ----------------------------------------------------------

function verdictItem(v) {
  const recipients = v.recipients.map((r) => {
    const who = r.user_id !== undefined ? `user ${r.user_id}` : r.chat_id !== undefined ? `chat ${r.chat_id}` : `url ${r.url}`;
    return el("li", { class: r.delivers ? "ok" : "no", text: `${who}: ${r.reason}` });
  });
  return el("li", { class: v.fires ? "fires" : "silent", "data-script-id": v.script_id, "data-reason": v.reason },
    el("strong", { text: `Script ${v.script_id} ${v.title}: ` }),
    el("span", { class: "verdict", text: v.fires ? "fires" : "does not fire" }),
    ` — ${v.reason}`,
    recipients.length ? el("ul", {}, ...recipients) : null);
}

async function explain(e) {
  e.preventDefault();
  const f = new FormData(e.target);
  const body = { event_id: Number(f.get("event_id")), camera_id: Number(f.get("camera_id")) };
  const at = String(f.get("occurred_at") || "");
  if (at) body.occurred_at = `${at.length === 16 ? `${at}:00` : at}Z`;
  const res = await api("/explain", { method: "POST", body });
  $("#explain-error").textContent = res.status === 200 ? "" : errorText(res);
  const list = $("#explain-result");
  if (res.status !== 200) { list.replaceChildren(); return; }
  list.replaceChildren(...(res.body.data.length ? res.body.data.map(verdictItem) : [el("li", { text: "No script of yours reacts to this event." })]));
}

async function lookUp(e) {
  e.preventDefault();
  const id = String(new FormData(e.target).get("id")).trim();
  const res = await api(`/occurrences/${encodeURIComponent(id)}`);
  const out = $("#occurrence-result");
  $("#occurrence-error").textContent = res.status === 200 ? "" : (res.status === 404 ? "No delivery is known for this occurrence." : errorText(res));
  if (res.status !== 200) { out.replaceChildren(); return; }
  const d = res.body.data;
  const rows = d.deliveries.map((x) => el("tr", {},
    el("td", { text: x.script_id }), el("td", { text: x.recipient }), el("td", { text: x.reaction }),
    el("td", { text: x.state }), el("td", { text: x.attempts }), el("td", { text: x.last_error || "" }),
    el("td", { text: x.updated_at })));
  out.replaceChildren(
    el("p", { text: `Event ${d.event_id}, camera ${d.camera_id}, at ${d.occurred_at}` }),
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["Script", "Recipient", "Reaction", "State", "Attempts", "Last error", "Updated"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows))),
    el("ul", { class: "verdicts" }, ...d.explanation.map(verdictItem)));
}

// ---- health --------------------------------------------------------------------------

const RATES = [
  ["scriptd_occurrences_received_total", "occurrences received"],
  ["scriptd_occurrences_matched_total", "occurrences that fired a script"],
  ['scriptd_deliveries_total{outcome="delivered"}', "deliveries sent"],
  ['scriptd_deliveries_total{outcome="retry"}', "attempts to retry"],
  ['scriptd_deliveries_total{outcome="failed"}', "deliveries failed"],
  ["scriptd_deliveries_expired_total", "deliveries expired"],
  ["scriptd_deliveries_coalesced_total", "deliveries coalesced"],
];

function sums(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    const series = line.slice(0, sp);
    const value = Number(line.slice(sp + 1));
    const name = series.split("{")[0];
    for (const [key] of RATES) {
      const [kname, klabel] = key.split("{");
      if (kname !== name) continue;
      if (klabel && !series.includes(klabel.slice(0, -1))) continue;
      out[key] = (out[key] || 0) + value;
    }
  }
  return out;
}

async function refreshHealth() {
  try {
    const h = await (await fetch("/healthz")).json();
    $("#health-status").textContent = `Status: ${h.status}`;
    $("#health-components tbody").replaceChildren(...Object.entries(h.components).map(([name, c]) =>
      el("tr", { class: c.state }, el("td", { text: name }), el("td", { text: c.state }), el("td", { text: c.reason || "" }))));
    const now = Date.now();
    state.samples.push({ at: now, v: sums(await (await fetch("/metrics")).text()) });
    state.samples = state.samples.filter((s) => now - s.at <= 65000);
    const first = state.samples[0];
    const last = state.samples[state.samples.length - 1];
    const span = Math.max(1, Math.round((last.at - first.at) / 1000));
    $("#health-rates tbody").replaceChildren(...RATES.map(([key, label]) =>
      el("tr", {}, el("td", { text: label }), el("td", { text: `${(last.v[key] || 0) - (first.v[key] || 0)} (over ${span} s)` }))));
  } catch (err) {
    $("#health-status").textContent = `Cannot read health: ${err}`;
  }
}

// ---- wiring --------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  setupTabs();
  $("#sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#token").value.trim()); });
  $("#sign-out").addEventListener("click", () => signOut());
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.page = 1; loadScripts(); });
  $("#prev-page").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); loadScripts(); });
  $("#next-page").addEventListener("click", () => { state.page = Math.min(state.lastPage, state.page + 1); loadScripts(); });
  setupZones();
  $("#week-form").addEventListener("submit", (e) => { e.preventDefault(); if (state.script) openWeek(state.script, $("#week-start").value); });
  $("#explain-form").addEventListener("submit", explain);
  $("#occurrence-form").addEventListener("submit", lookUp);
  setInterval(() => { if (token()) refreshHealth(); }, 5000);
  if (token()) signIn(token());
});
