// The status page's clocks and week grid: times in the browser's zone, the scripts' zone or
// UTC, and the week of `GET /scripts/{id}/week` laid out on the days of the chosen zone.
// Loaded before app.js, whose helpers ($, el, api, errorText, state) it uses when called.
"use strict";

// ---- time zones ------------------------------------------------------------------------

const LOCAL_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

// The IANA zone (or undefined for the browser's own) of the chosen clock.
function zoneOf(mode = state.zoneMode) {
  if (mode === "utc") return "UTC";
  if (mode === "script") return state.scriptZone;
  return undefined;
}

function zoneName(mode = state.zoneMode) {
  if (mode === "utc") return "UTC";
  if (mode === "script") return state.scriptZone;
  return LOCAL_ZONE;
}

function zoneAbbrev() { return state.zoneMode === "utc" ? "UTC" : zoneName(); }

const formats = new Map();
function formatter(zone, opts) {
  const key = `${zone || ""}|${JSON.stringify(opts)}`;
  if (!formats.has(key)) {
    try { formats.set(key, new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: zone })); }
    catch (_) { formats.set(key, new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: "UTC" })); }
  }
  return formats.get(key);
}

// Wall-clock parts of instant `ms` in `zone`.
function partsAt(ms, zone) {
  const out = {};
  for (const p of formatter(zone, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }).formatToParts(new Date(ms))) {
    if (p.type !== "literal") out[p.type] = Number(p.value);
  }
  return out;
}

// The zone's offset from UTC at `ms`, in ms.
function offsetAt(ms, zone) {
  const p = partsAt(ms, zone);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
}

// The instant of midnight starting the date y-m-d in `zone` (Date.UTC normalises overflow).
function midnight(y, m, d, zone) {
  const wall = Date.UTC(y, m - 1, d);
  let guess = wall - offsetAt(wall, zone);
  guess = wall - offsetAt(guess, zone);
  return guess;
}

// `HH:MM` (with `:SS` when not whole minutes) of instant `ms` in the chosen zone.
function clock(ms, seconds = false) {
  const p = partsAt(ms, zoneOf());
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(p.hour)}:${pad(p.minute)}${seconds || p.second ? `:${pad(p.second)}` : ""}`;
}

function dayLabel(ms) {
  return formatter(zoneOf(), { weekday: "short", day: "2-digit", month: "2-digit" }).format(new Date(ms));
}

function setupZones() {
  $("#zone-local-name").textContent = LOCAL_ZONE;
  for (const r of document.querySelectorAll("input[name=zone]")) {
    r.addEventListener("change", () => {
      if (!r.checked) return;
      state.zoneMode = r.value;
      if (state.week) drawWeek();
      renderDeliveries();
    });
  }
}

// ---- the week grid ----------------------------------------------------------------------

async function openWeek(script, start) {
  state.script = script;
  $("#week").hidden = false;
  $("#week-title").textContent = `Week of script ${script.id}: ${script.title}`;
  const q = start ? `?start=${encodeURIComponent(start)}` : "";
  const res = await api(`/scripts/${script.id}/week${q}`);
  const grid = $("#week-grid");
  if (res.status !== 200) { state.week = null; grid.replaceChildren(el("p", { class: "error", text: errorText(res) })); return; }
  state.week = res.body.data;
  state.scriptZone = state.week.timezone;
  $("#zone-script-name").textContent = state.week.timezone;
  $("#week-start").value = state.week.start;
  drawWeek();
  $("#week").scrollIntoView({ block: "nearest" });
}

// What a stretch is, for its colour and its text.
function kindOf(s) {
  if (s.active) return s.reason.startsWith("in interval") ? "on iv" : "on";
  return s.reason.startsWith("in break") ? "brk" : "off";
}

function describe(s) { return `${s.active ? "active" : "inactive"}, ${s.reason}`; }

// The week as absolute stretches and the days of the chosen zone that overlap it.
function weekLayout(week) {
  const segs = [];
  const holidays = new Map();
  for (const d of week.days) {
    if (d.holiday) holidays.set(d.date, d.holiday);
    for (const s of d.segments) {
      const fromMs = Date.parse(s.from);
      const toMs = Date.parse(s.to);
      // A stretch that runs on past the daemon's midnight is one band (and one tooltip).
      const prev = segs[segs.length - 1];
      if (prev && prev.toMs === fromMs && prev.active === s.active && prev.reason === s.reason) {
        prev.toMs = toMs;
        prev.to = s.to;
      } else {
        segs.push({ ...s, fromMs, toMs });
      }
    }
  }
  const first = Date.parse(week.days[0].starts_at);
  const last = Date.parse(week.days[week.days.length - 1].ends_at);
  const zone = zoneOf();
  const p = partsAt(first, zone);
  const days = [];
  let y = p.year; let m = p.month; let d = p.day;
  for (let i = 0; i < 9; i += 1) {
    const start = midnight(y, m, d + i, zone);
    const end = midnight(y, m, d + i + 1, zone);
    if (start >= last) break;
    if (end <= first) continue;
    const q = partsAt(start + 12 * 3600 * 1000, zone);
    const date = `${q.year}-${String(q.month).padStart(2, "0")}-${String(q.day).padStart(2, "0")}`;
    days.push({ date, start, end, holiday: holidays.get(date) || null });
  }
  return { segs, days, first, last };
}

function drawWeek() {
  const week = state.week;
  $("#week-zone").textContent = zoneName();
  const { segs, days, first, last } = weekLayout(week);
  const grid = $("#week-grid");
  grid.style.setProperty("--days", String(days.length));
  grid.replaceChildren(hourAxis(), ...days.map((d) => dayColumn(d, segs, first, last)));
}

// The left-hand time axis of a 24-hour day: a label every 3 hours.
function hourAxis() {
  const axis = el("div", { class: "axis", "aria-hidden": "true" }, el("div", { class: "day-head", text: "" }));
  const body = el("div", { class: "axis-body" });
  for (let h = 0; h <= 24; h += 3) {
    const label = el("span", { class: "hour-label", text: `${String(h).padStart(2, "0")}:00` });
    label.style.setProperty("top", `${(100 * h) / 24}%`);
    body.append(label);
  }
  axis.append(body);
  return axis;
}

function dayColumn(day, segs, first, last) {
  const span = day.end - day.start;
  const hours = Math.round((span / 3600000) * 100) / 100;
  const label = dayLabel(day.start + 12 * 3600000);
  const col = el("div", { class: `day${day.holiday ? " holiday" : ""}`, role: "listitem", "data-date": day.date, "data-hours": hours });
  const headText = `${label}${hours !== 24 ? ` (${hours} h)` : ""}`;
  const head = el("div", { class: "day-head" }, el("span", { text: headText }));
  if (day.holiday) {
    const title = day.holiday.title || "holiday";
    head.append(el("span", { class: "holiday-label", title: day.holiday.reason || title, text: `Holiday: ${title}` }));
  }
  const body = el("ul", { class: "day-body", "aria-label": `${headText}${day.holiday ? `, holiday ${day.holiday.title || ""}` : ""}, times in ${zoneName()}` });
  body.style.setProperty("--hours", String(span / 3600000));
  // Gridlines: one per elapsed hour, a stronger one every 3 wall-clock hours.
  for (let t = day.start + 3600000; t < day.end; t += 3600000) {
    const line = el("li", { class: `hour-line${partsAt(t, zoneOf()).hour % 3 === 0 ? " major" : ""}`, "aria-hidden": "true", role: "presentation" });
    line.style.setProperty("top", `${(100 * (t - day.start)) / span}%`);
    body.append(line);
  }
  // Outside the requested week (the first and last day of another zone's layout).
  const outside = [[day.start, Math.min(day.end, first)], [Math.max(day.start, last), day.end]];
  for (const [a, b] of outside) {
    if (b <= a) continue;
    const o = el("li", { class: "seg nodata", title: `${clock(a)}–${clock(b)}: outside this week` },
      el("span", { class: "sr", text: `${clock(a)} to ${clock(b)}: outside this week` }));
    o.style.setProperty("top", `${(100 * (a - day.start)) / span}%`);
    o.style.setProperty("height", `${(100 * (b - a)) / span}%`);
    body.append(o);
  }
  for (const s of segs) {
    const a = Math.max(s.fromMs, day.start);
    const b = Math.min(s.toMs, day.end);
    if (b <= a) continue;
    const kind = kindOf(s);
    const text = `${clock(a)}–${b === day.end ? "24:00" : clock(b)} ${zoneName()}: ${describe(s)}`;
    const seg = el("li", {
      class: `seg ${kind}`,
      "data-active": s.active ? "true" : "false",
      "data-reason": s.reason,
      "data-from": s.from,
      "data-to": s.to,
      title: text,
    }, el("span", { class: "sr", text }));
    seg.style.setProperty("top", `${(100 * (a - day.start)) / span}%`);
    seg.style.setProperty("height", `${(100 * (b - a)) / span}%`);
    body.append(seg);
  }
  col.append(head, body);
  return col;
}
