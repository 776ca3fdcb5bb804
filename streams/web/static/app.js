// kudos live page. No dependencies. Every piece of data (user ids, names, teams) is
// untrusted: it only ever reaches the page through textContent or SVG attributes.
"use strict";

const $ = (id) => document.getElementById(id);
const BADGES = {first_thanks: "First thanks", helper: "Helper", sharer: "Sharer", streak_5: "5-day streak"};
const WINDOW_WORDS = {hour: "hour", day: "day", week: "week", month: "month", quarter: "quarter", year: "year", all: "all time"};
const SVG = "http://www.w3.org/2000/svg";

const TOKEN_KEY = "kudos.access_token";

const state = {source: null, key: "", last: null, noData: false, user: null, token: "", announceQueue: [], announceTimer: 0, historySeq: 0,
  valuesOrg: null, valueSeq: 0};

// With KUDOS_AUTH=jwt every /api/* read needs a token: handed over in the address's
// fragment (#access_token=..., which browsers never send to a server) or pasted into the
// sign-in form. It lives in this tab's sessionStorage only.
function loadToken() {
  const handed = new URLSearchParams(location.hash.slice(1)).get("access_token");
  if (handed) {
    sessionStorage.setItem(TOKEN_KEY, handed);
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY) || "";
  $("signout").hidden = !state.token;
}

function authHeaders() {
  return state.token ? {Authorization: "Bearer " + state.token} : {};
}

// The org a token names, to preselect it (a convenience only: the worker decides).
function tokenOrg() {
  try {
    const part = state.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    return typeof claims.org === "string" ? claims.org : "";
  } catch (err) {
    return "";
  }
}

function showSignIn(why) {
  $("signin-why").textContent = why;
  $("signin").hidden = false;
  status("Sign in to see the leaderboard.", true);
  $("token").focus();
}

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  $("token").value = "";
  $("signin").hidden = true;
  loadToken();
  const org = tokenOrg();
  if (org) $("org").value = org;
  reconnect();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  loadToken();
  reconnect();
}

function reconnect() {
  if (state.source) state.source.close();
  state.source = null;
  state.key = "";
  connect();
}

// Why a stream was refused: EventSource cannot tell, so ask once with a plain read.
async function checkAccess(org) {
  try {
    const q = new URLSearchParams({org, top: "1"});
    const r = await fetch("/api/leaderboard?" + q, {headers: authHeaders()});
    if (r.status === 401) {
      showSignIn(state.token ? "That token was not accepted (expired or not valid here). Paste a new one."
        : "This leaderboard needs a sign-in: paste an access token from your identity provider.");
      return false;
    }
    if (r.status === 403) {
      status(`Your token is not for ${org}.`, true);
      return false;
    }
  } catch (err) {
    // the worker is away: retry
  }
  return true;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function when(iso, withTime) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return withTime ? d.toLocaleString([], {dateStyle: "medium", timeStyle: "short"}) : d.toLocaleDateString([], {dateStyle: "medium"});
}

function settings() {
  return {org: $("org").value.trim(), window: $("window").value, view: $("view").value, top: $("top").value};
}

function status(text, problem) {
  $("status").textContent = text;
  $("status").classList.toggle("problem", Boolean(problem));
}

// Polite and not chatty: only new badges and a new leader, batched, at most every 4 s.
function announce(message) {
  state.announceQueue.push(message);
  if (state.announceTimer) return;
  state.announceTimer = setTimeout(() => {
    $("announce").textContent = state.announceQueue.slice(-3).join(" ");
    state.announceQueue = [];
    state.announceTimer = 0;
  }, 4000);
}

function nameOf(entry) {
  return entry.display_name || entry.user_id;
}

function movementCell(entry) {
  const td = el("td", null, "chg");
  const m = entry.movement;
  let shown = "";
  let spoken = "";
  if (m === "up" || m === "down") {
    const by = entry.previous_rank === null ? null : Math.abs(entry.previous_rank - entry.rank);
    shown = (m === "up" ? "▲" : "▼") + (by === null ? "" : by);
    spoken = (m === "up" ? "up " : "down ") + (by === null ? "" : by + (by === 1 ? " place" : " places"));
  } else if (m === "same") {
    shown = "–"; spoken = "no change";
  } else if (m === "new") {
    shown = "new"; spoken = "new this " + WINDOW_WORDS[state.last ? state.last.window : "week"];
  }
  const visible = el("span", shown, m || "");
  visible.setAttribute("aria-hidden", "true");
  td.append(visible, el("span", spoken, "sr-only"));
  return td;
}

function renderPeople(board, previous) {
  const table = $("people");
  const hasPrev = board.previous_window_start !== null;
  table.classList.toggle("no-prev", !hasPrev);
  const word = WINDOW_WORDS[board.window];
  const who = board.entries.length ? `Top ${board.entries.length} people` : "Nobody yet";
  $("people-caption").textContent = board.window === "all"
    ? `${who} in ${board.org}, all time.`
    : `${who} in ${board.org}, ${word} from ${when(board.window_start, true)}. ` +
      `Change compares ranks with the previous ${word}.`;
  const before = new Map((previous ? previous.entries : []).map((e) => [e.user_id, e.score]));
  const rows = board.entries.map((e) => {
    const tr = el("tr");
    tr.dataset.user = e.user_id;
    if (previous && before.get(e.user_id) !== e.score) tr.className = "changed";
    tr.append(el("td", e.rank, "num rank"), movementCell(e));
    const name = el("td", null, "name");
    const button = el("button", nameOf(e), "who");
    button.type = "button";
    button.setAttribute("aria-pressed", String(e.user_id === state.user));
    button.title = "Show score over time";
    button.addEventListener("click", () => selectUser(e.user_id));
    name.append(button, partsInline([[e.thanks_received, "received"], [e.distinct_thankers, "thankers"],
      [e.thanks_given, "given"], [e.shares, "shares"], [e.reactions_received, "reactions"]]));
    const score = el("td", null, "num score");
    score.append(el("span", e.score, "total"));
    tr.append(name, score);
    for (const v of [e.thanks_received, e.distinct_thankers, e.thanks_given, e.shares, e.reactions_received]) {
      tr.append(el("td", v, "num part"));
    }
    return tr;
  });
  $("people-rows").replaceChildren(...rows);
  setTimeout(() => { for (const tr of rows) tr.classList.remove("changed"); }, 1500);
  showEmpty(board.entries.length === 0, "No points in this window yet.");
}

function renderTeams(board) {
  const which = board.entries.length ? `Top ${board.entries.length} teams` : "No team yet";
  $("teams-caption").textContent = `${which} in ${board.org}, ` +
    (board.window === "all" ? "all time" : `${WINDOW_WORDS[board.window]} from ${when(board.window_start, true)}`) +
    `. Teams with at least ${board.min_members} visible members.`;
  $("teams-rows").replaceChildren(...board.entries.map((e) => {
    const tr = el("tr");
    const group = el("td", e.group, "name");
    group.append(partsInline([[e.thanks_received, "received"], [e.thanks_given, "given"],
      [e.shares, "shares"], [e.reactions_received, "reactions"]]));
    tr.append(el("td", e.rank, "num"), group, el("td", e.members, "num"), el("td", e.score, "num"));
    for (const v of [e.thanks_received, e.thanks_given, e.shares, e.reactions_received]) tr.append(el("td", v, "num part"));
    return tr;
  }));
  showEmpty(board.entries.length === 0, "No team has enough visible members to be shown.");
}

// Phones show the parts under the name (their columns are hidden there); zeros left out.
function partsInline(parts) {
  const word = (n, what) => (n === 1 ? what.replace(/s$/, "") : what);
  return el("span", parts.filter(([n]) => n).map(([n, what]) => `${n} ${word(n, what)}`).join(" · "), "parts-inline");
}

function showEmpty(empty, text) {
  $("empty").hidden = !empty;
  $("empty").textContent = empty ? text : "";
}

function badgeKey(b) {
  return `${b.user_id}\u0000${b.badge}\u0000${b.period_start}`;
}

function renderBadges(feed, previous) {
  const items = feed.badges.map((b) => {
    const li = el("li");
    li.append(el("span", nameOf(b)), document.createTextNode(" earned "),
      el("span", BADGES[b.badge] || b.badge, "badge"));
    const t = el("time", when(b.awarded_at, true));
    t.dateTime = b.awarded_at;
    li.append(t);
    return li;
  });
  $("badges").replaceChildren(...items);
  $("no-badges").hidden = items.length > 0;
  if (previous) {
    const seen = new Set(previous.badges.map(badgeKey));
    for (const b of feed.badges) {
      if (!seen.has(badgeKey(b))) announce(`${nameOf(b)} earned ${BADGES[b.badge] || b.badge}.`);
    }
  }
}

function render(snap) {
  const previous = state.last && !state.last.error ? state.last : null;
  state.last = snap;
  const teamsOption = $("view").querySelector('option[value="teams"]');
  teamsOption.disabled = !snap.has_teams && $("view").value !== "teams";
  teamsOption.textContent = snap.has_teams ? "Teams" : "Teams (none yet)";
  $("people").hidden = snap.view !== "people";
  $("teams").hidden = snap.view !== "teams";
  if (snap.leaderboard) {
    renderPeople(snap.leaderboard, previous && previous.leaderboard);
    const lead = snap.leaderboard.entries[0];
    const was = previous && previous.leaderboard && previous.leaderboard.entries[0];
    if (lead && was && lead.user_id !== was.user_id) announce(`${nameOf(lead)} is now first.`);
  }
  if (snap.teams) renderTeams(snap.teams);
  renderBadges(snap.badges, previous && previous.badges);
  status(`Live · updated ${new Date().toLocaleTimeString()}`);
  if (state.user) loadHistory();
  loadValueBoard();
}

// Company values: the org's listed values (/api/values), and the board of the chosen one
// (/api/leaderboard?value=), reloaded with every snapshot. Hidden for an org without values.
async function loadValues(org) {
  if (state.valuesOrg === org) return;
  state.valuesOrg = org;
  let values = [];
  try {
    const r = await fetch("/api/values?" + new URLSearchParams({org}), {headers: authHeaders()});
    if (r.ok) values = (await r.json()).values;
  } catch (err) {
    state.valuesOrg = null; // ask again with the next connection
  }
  if (state.valuesOrg !== org) return;
  const select = $("value");
  const chosen = new URLSearchParams(location.search).get("value") || select.value;
  select.replaceChildren(...values.map((v) => { const o = el("option", v); o.value = v; return o; }));
  if (values.includes(chosen)) select.value = chosen;
  $("values-section").hidden = values.length === 0;
  loadValueBoard();
}

async function loadValueBoard() {
  const value = $("value").value;
  if ($("values-section").hidden || !value) return;
  const seq = ++state.valueSeq;
  const s = settings();
  const q = new URLSearchParams({org: s.org, window: s.window, value, top: "10"});
  try {
    const r = await fetch("/api/leaderboard?" + q, {headers: authHeaders()});
    if (seq !== state.valueSeq || !r.ok) return;
    renderValueBoard(await r.json());
  } catch (err) {
    // the worker is away: the next snapshot asks again
  }
}

function renderValueBoard(board) {
  const who = board.entries.length ? `Top ${board.entries.length} people` : "Nobody yet";
  const span = board.window === "all" ? "all time" : `${WINDOW_WORDS[board.window]} from ${when(board.window_start, true)}`;
  $("value-caption").textContent = `${who} by counted thanks carrying “${board.value}” in ${board.org}, ${span}.`;
  $("value-rows").replaceChildren(...board.entries.map((e) => {
    const tr = el("tr");
    tr.append(el("td", e.rank, "num"), el("td", nameOf(e), "name"),
      el("td", e.thanks_received, "num"), el("td", e.distinct_thankers, "num"));
    return tr;
  }));
}

function connect() {
  const s = settings();
  if (!s.org) { status("Enter an organisation.", true); return; }
  const q = new URLSearchParams(s);
  const key = q.toString();
  const url = new URL(location.href);
  for (const [k, v] of q) url.searchParams.set(k, v);
  if (state.user) url.searchParams.set("user", state.user); else url.searchParams.delete("user");
  history.replaceState(null, "", url);
  loadValues(s.org);
  if (state.source && state.key === key) return;
  if (state.source) state.source.close();
  state.key = key;
  state.last = null;
  state.noData = false;
  status("Connecting…");
  const tokenPart = state.token ? "&access_token=" + encodeURIComponent(state.token) : "";
  const source = new EventSource("/api/live?" + key + tokenPart);
  state.source = source;
  source.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    if (snap.error) { status(`${snap.error} — showing the last data received.`, true); return; }
    state.noData = Boolean(snap.no_data);
    render(snap);
    // An org without points: the worker ends the stream and EventSource asks again later.
    if (state.noData) status(`No points in ${snap.org} yet — checking again shortly.`);
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (no or a bad token: 401, another org: 403, too many streams: 429) or the
      // worker is away: sign in, or try again a little later.
      status("Disconnected — retrying…", true);
      checkAccess(s.org).then((retry) => {
        if (!retry) return;
        setTimeout(() => { if (state.source === source) { state.source = null; connect(); } }, 5000);
      });
    } else if (!state.noData) {
      status("Reconnecting…", true);
    }
  });
}

function selectUser(user) {
  state.user = user;
  for (const b of document.querySelectorAll("button.who")) {
    b.setAttribute("aria-pressed", String(b.closest("tr").dataset.user === user));
  }
  const url = new URL(location.href);
  url.searchParams.set("user", user);
  history.replaceState(null, "", url);
  loadHistory();
}

async function loadHistory() {
  const seq = ++state.historySeq;
  const s = settings();
  const window = s.window === "all" ? "day" : s.window;
  const q = new URLSearchParams({org: s.org, window, points: "14"});
  try {
    const r = await fetch(`/api/users/${encodeURIComponent(state.user)}/history?` + q, {headers: authHeaders()});
    if (seq !== state.historySeq) return;
    if (!r.ok) {
      $("chart-figure").hidden = true;
      $("chart-hint").hidden = false;
      $("chart-hint").textContent = r.status === 403
        ? "Only this person or an admin can see their score over time."
        : "The history could not be loaded.";
      return;
    }
    drawChart(await r.json());
  } catch (err) {
    if (seq === state.historySeq) $("chart-hint").textContent = "The history could not be loaded.";
  }
}

function drawChart(h) {
  const W = 320, H = 150, L = 30, R = 10, T = 12, B = 26;
  const pts = h.points;
  const max = Math.max(1, ...pts.map((p) => p.score));
  const x = (i) => L + (pts.length < 2 ? 0 : (i * (W - L - R)) / (pts.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const chart = $("chart");
  const parts = [
    svg("line", {x1: L, y1: y(0), x2: W - R, y2: y(0), class: "axis"}),
    svg("line", {x1: L, y1: T, x2: L, y2: y(0), class: "axis"}),
    svg("text", {x: L - 4, y: y(max) + 4, "text-anchor": "end"}, max),
    svg("text", {x: L - 4, y: y(0) + 4, "text-anchor": "end"}, 0),
    svg("polyline", {points: pts.map((p, i) => `${x(i)},${y(p.score)}`).join(" "), class: "line"}),
  ];
  pts.forEach((p, i) => parts.push(svg("circle", {cx: x(i), cy: y(p.score), r: 3, class: "dot"})));
  if (pts.length) {
    parts.push(svg("text", {x: L, y: H - 6}, when(pts[0].window_start, h.window === "hour")));
    parts.push(svg("text", {x: W - R, y: H - 6, "text-anchor": "end"}, when(pts[pts.length - 1].window_start, h.window === "hour")));
  }
  chart.replaceChildren(...parts);
  const name = h.display_name || h.user_id;
  const last = pts.length ? pts[pts.length - 1].score : 0;
  const best = Math.max(0, ...pts.map((p) => p.score));
  $("chart-caption").textContent = `${name}: score per ${h.window}, last ${pts.length} ${h.window}s. ` +
    `Now ${last}; highest ${best}.`;
  $("chart-figure").hidden = false;
  $("chart-hint").hidden = true;
}

function start() {
  const params = new URLSearchParams(location.search);
  for (const k of ["org", "window", "view", "top"]) {
    const v = params.get(k);
    if (v && [...($(k).options || [])].every((o) => o.value !== v) && k !== "org") continue;
    if (v) $(k).value = v;
  }
  state.user = params.get("user");
  loadToken();
  if (!params.get("org") && tokenOrg()) $("org").value = tokenOrg();
  $("signin").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value); });
  $("signout").addEventListener("click", signOut);
  $("controls").addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
  $("controls").addEventListener("change", () => { connect(); if (state.user) loadHistory(); });
  $("value").addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("value", $("value").value);
    history.replaceState(null, "", url);
    loadValueBoard();
  });
  connect();
}

document.addEventListener("DOMContentLoaded", start);
