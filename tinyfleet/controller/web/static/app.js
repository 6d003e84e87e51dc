// The tinyfleet dashboard: polls the controller's JSON API (with the HttpOnly cookie the log-in set)
// and redraws the page's content. Every element is built with createElement and text nodes: nothing
// the API returns is ever parsed as HTML.
"use strict";

const POLL_MS = 1000;
const PROBLEM_PHASES = ["failed", "rolled_back"];

class ApiError extends Error {}

async function api(method, path, body) {
  const init = {method, credentials: "same-origin", headers: {Accept: "application/json"}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new ApiError("logged out");
  }
  const data = await response.json();
  if (!response.ok) throw new ApiError((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function deviceLink(id) {
  return el("a", {href: "/devices/" + encodeURIComponent(id), class: "device-link"}, id);
}

// Ages are <time> elements filled in after each redraw, so that a page whose data did not change is
// left alone (its buttons stay where they are) while its ages keep counting.
function age(ts) {
  return el("time", {"data-ts": ts ?? ""});
}

function ageText(ts) {
  if (ts === null || ts === undefined || ts === "") return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s >= 86400) return `${Math.round(s / 86400)}d ago`;
  if (s >= 3600) return `${Math.round(s / 3600)}h ago`;
  if (s >= 60) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s)}s ago`;
}

// A time to come ("in 3m"), filled in like the ages.
function until(ts) {
  return el("time", {"data-until": ts ?? ""});
}

function untilText(ts) {
  if (ts === null || ts === undefined || ts === "") return "never";
  const s = ts - Date.now() / 1000;
  if (s <= 0) return "now";
  if (s >= 86400) return `in ${Math.round(s / 86400)}d`;
  if (s >= 3600) return `in ${Math.round(s / 3600)}h`;
  if (s >= 60) return `in ${Math.round(s / 60)}m`;
  return `in ${Math.round(s)}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function badge(text, kind) {
  return el("span", {class: `badge ${kind || text}`}, text);
}

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", {colspan: headers.length, class: "empty"}, "none"))]));
}

function needsAttention(d) {
  return !d.online || Boolean(d.error) || d.apps.some((a) => PROBLEM_PHASES.includes(a.phase) || a.error);
}

function attentionReason(d) {
  if (!d.online) return ["offline (last seen ", age(d.last_seen), ")"];
  if (d.error) return d.error;
  const app = d.apps.find((a) => PROBLEM_PHASES.includes(a.phase) || a.error);
  return app ? `${app.name}: ${app.phase || "no report"}${app.error ? " - " + app.error : ""}` : "";
}

function appsCell(d) {
  if (!d.apps.length) return "-";
  return d.apps.map((a) => el("div", {class: "app"},
    `${a.name}${a.release !== null ? " r" + a.release : ""} `, badge(a.phase || "no report", a.phase || "none"),
    a.health && a.health !== "none" ? ` (${a.health})` : ""));
}

function card(label, value, kind) {
  return el("div", {class: `card ${kind || ""}`, "data-count": label}, el("div", {class: "value"}, value),
    el("div", {class: "label"}, label));
}

// -- pages -----------------------------------------------------------------------------------------

async function overview() {
  const [devices, rollouts] = await Promise.all([api("GET", "/v1/devices"), api("GET", "/v1/rollouts?limit=5")]);
  const list = devices.devices;
  const online = list.filter((d) => d.online).length;
  const attention = list.filter(needsAttention);
  const platforms = {};
  const phases = {};
  for (const d of list) {
    platforms[d.platform || "?"] = (platforms[d.platform || "?"] || 0) + 1;
    for (const a of d.apps) {
      const key = `${a.release !== null ? "r" + a.release + " " : ""}${a.phase || "no report"}`;
      phases[a.name] = phases[a.name] || {};
      phases[a.name][key] = (phases[a.name][key] || 0) + 1;
    }
  }
  const active = rollouts.rollouts.filter((r) => r.open);
  const row = (d) => el("tr", {"data-device": d.id},
    el("td", {}, deviceLink(d.id)), el("td", {}, badge(d.online ? "online" : "offline")),
    el("td", {}, d.platform || "?"), el("td", {}, appsCell(d)), el("td", {}, d.groups.join(", ") || "-"),
    el("td", {}, Object.entries(d.tags).map(([k, v]) => `${k}=${v}`).join(", ") || "-"),
    el("td", {}, age(d.last_seen)));
  return [
    el("div", {class: "cards"}, card("devices", list.length), card("online", online, "ok"),
      card("offline", list.length - online, list.length - online ? "bad" : ""),
      card("need attention", attention.length, attention.length ? "bad" : "")),
    el("p", {class: "facts"}, "platforms: ",
      Object.entries(platforms).sort().map(([p, n]) => `${p} ${n}`).join("  ") || "-"),
    Object.entries(phases).sort().map(([app, counts]) => el("p", {class: "facts"}, `${app}: `,
      Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join("  "))),
    active.length ? el("p", {class: "facts"}, "rollouts in progress: ",
      active.map((r) => el("a", {href: "/rollouts"}, `#${r.id} ${r.app} -> release ${r.release} (${r.state}, ` +
        `${r.counts.converged}/${r.total})`))) : null,
    el("h2", {}, "Need attention"),
    table(["device", "why"], attention.map((d) => el("tr", {"data-device": d.id},
      el("td", {}, deviceLink(d.id)), el("td", {class: "reason"}, attentionReason(d)))), {id: "attention"}),
    el("h2", {}, "Devices"),
    table(["device", "state", "platform", "apps", "groups", "tags", "last seen"], list.slice(0, 500).map(row),
      {id: "devices"}),
  ];
}

function pinControls(d) {
  const pinned = Object.keys(d.pins);
  return el("div", {class: "pins"},
    pinned.length ? pinned.map((app) => el("span", {class: "pin"}, `${app === "*" ? "whole device" : app}` +
      `${d.pins[app] !== null ? " at release " + d.pins[app] : " held"} `,
      el("button", {class: "quiet", onclick: () => act("DELETE",
        `/v1/devices/${encodeURIComponent(d.id)}/pins/${encodeURIComponent(app)}`)}, "unpin"))) : "not pinned ",
    pinned.includes("*") ? null : el("button", {class: "quiet", "data-action": "pin", onclick: () => act("PUT",
      `/v1/devices/${encodeURIComponent(d.id)}/pins/*`, {release: null})}, "pin the whole device"));
}

// An app's update lock as its device reports it: a downloaded update waits while the app holds it.
// The release's max wait (if any) is when the agent goes ahead anyway; `expires` already counts it.
function lockCell(locked, release) {
  if (!locked) return "-";
  const maxWait = release && release.lock_max_wait !== null && release.lock_max_wait !== undefined ?
    `max wait ${release.lock_max_wait} s` : "no max wait: until the lock goes or expires";
  return el("span", {class: "lock"}, badge("locked"), ` by ${locked.holder || "unknown"} since `, age(locked.since),
    "; goes ahead ", locked.expires !== null && locked.expires !== undefined ? until(locked.expires) : "when released",
    ` (${maxWait})`);
}

async function device() {
  const id = decodeURIComponent(window.location.pathname.split("/").pop());
  const d = await api("GET", `/v1/devices/${encodeURIComponent(id)}`);
  const reportedApps = (d.reported || {}).apps || [];
  const reportedOf = (name) => reportedApps.find((r) => r.name === name) || {};
  const lockedReleases = [...new Set(d.apps.filter((a) => reportedOf(a.name).locked && a.release !== null)
    .map((a) => a.release))];
  const releaseOf = Object.fromEntries(await Promise.all(lockedReleases.map(async (rid) =>
    [rid, await api("GET", `/v1/releases/${rid}`)])));
  const h = d.health || {};
  const facts = [
    ["state", badge(d.online ? "online" : "offline")], ["platform", d.platform || "?"],
    ["agent", d.agent_version || "?"], ["last seen", age(d.last_seen)], ["online since", age(d.online_since)],
    ["groups", d.groups.join(", ") || "-"],
    ["tags", Object.entries(d.tags).map(([k, v]) => `${k}=${v}`).join(", ") || "-"],
    ["pins", pinControls(d)],
    ["generation", `desired ${d.desired_generation}, reported ${d.reported_generation}`],
  ];
  if (d.error) facts.push(["error", el("span", {class: "reason", id: "device-error"}, d.error)]);
  const metrics = [
    ["uptime", h.uptime_seconds !== undefined && h.uptime_seconds !== null ? `${Math.round(h.uptime_seconds)} s` : "-"],
    ["load", Array.isArray(h.load) ? h.load.map((x) => x.toFixed(2)).join(" ") : (h.load ?? "-")],
    ["memory available", bytes(h.mem_available_bytes)], ["disk free", bytes(h.disk_free_bytes)],
    ["CPU temperature", h.cpu_temp_c !== undefined && h.cpu_temp_c !== null ? `${h.cpu_temp_c.toFixed(1)} C` : "-"],
    ["throttled", h.throttled ?? "-"], ["engine reachable", h.engine_reachable ?? "-"],
    ["agent memory", bytes(h.agent_rss_bytes)], ["health report", age(d.health_at)],
  ];
  const kv = (rows, tableId) => el("table", {class: "kv", id: tableId},
    el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
  return [
    el("h1", {id: "device-id"}, d.id),
    el("div", {class: "columns"},
      el("div", {}, el("h2", {}, "Device"), kv(facts, "facts")),
      el("div", {}, el("h2", {}, "Health"), kv(metrics, "health"))),
    el("h2", {}, "Apps"),
    table(["app", "release", "phase", "health", "running image", "desired image", "update lock", "error"],
      d.apps.map((a) => {
        const reported = reportedOf(a.name);
        return el("tr", {"data-app": a.name}, el("td", {}, a.name), el("td", {}, a.release ?? "-"),
          el("td", {}, badge(a.phase || "no report", a.phase || "none")), el("td", {}, a.health || "-"),
          el("td", {class: "mono"}, a.current_image || "-"), el("td", {class: "mono"}, reported.desired_image || "-"),
          el("td", {class: "lock-cell"}, lockCell(reported.locked, releaseOf[a.release])),
          el("td", {class: "reason"}, a.error || ""));
      }), {id: "apps"}),
    el("h2", {}, "Last reports"),
    el("p", {class: "facts"}, "reported ", age(d.reported_at), ", health ", age(d.health_at)),
    el("pre", {id: "reported"}, JSON.stringify({status: d.status, reported: d.reported, health: d.health}, null, 2)),
  ];
}

async function releases() {
  const list = (await api("GET", "/v1/releases")).releases;
  const platforms = [...new Set(list.flatMap((r) => r.platforms.map((p) => p.platform)))].sort();
  return [
    el("h1", {}, `${list.length} releases`),
    table(["id", "app", "version", "digest", ...platforms, "budget", "created"], list.map((r) => {
      const sizes = Object.fromEntries(r.platforms.map((p) => [p.platform, p.compressed_size]));
      return el("tr", {"data-release": r.id}, el("td", {}, r.id), el("td", {}, r.app), el("td", {}, r.version),
        el("td", {class: "mono", title: r.digest}, r.digest.slice(0, 19)),
        platforms.map((p) => el("td", {class: "num", "data-platform": p}, sizes[p] === undefined ? "-" :
          `${sizes[p].toLocaleString("en")} B`)),
        el("td", {class: "num"}, bytes(r.max_bytes)), el("td", {}, age(r.created_at)));
    }), {id: "releases"}),
    el("p", {class: "hint"}, "Compressed image size per platform, from the manifests."),
  ];
}

let messageText = "";

async function act(method, path, body) {
  try {
    await api(method, path, body);
    messageText = "";
  } catch (err) {
    messageText = err.message;
  }
  await refresh();
}

function batches(r) {
  const groups = new Map();
  for (const t of r.targets || []) {
    const key = t.batch === null ? "not reached" : t.batch;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(t);
  }
  return [...groups.entries()].sort((a, b) => (a[0] === "not reached") - (b[0] === "not reached") || a[0] - b[0]);
}

function progress(done, total) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  const fill = el("div", {class: "fill"});
  fill.style.width = `${pct}%`; // through the CSSOM: the Content-Security-Policy refuses style attributes
  return el("div", {class: "bar", title: `${done}/${total}`}, fill);
}

function rolloutCard(r) {
  const c = r.counts;
  const buttons = r.open ? [
    r.state === "running" ? el("button", {"data-action": "pause", onclick: () => act("POST", `/v1/rollouts/${r.id}/pause`)}, "Pause") : null,
    r.state === "paused" ? el("button", {"data-action": "resume", onclick: () => act("POST", `/v1/rollouts/${r.id}/resume`)}, "Resume") : null,
    el("button", {class: "danger", "data-action": "abort", onclick: () => act("POST", `/v1/rollouts/${r.id}/abort`, {rollback: true})},
      "Abort and roll back"),
  ] : [];
  return el("article", {class: "rollout", "data-rollout": r.id, "data-state": r.state},
    el("h2", {}, `#${r.id} ${r.app} -> release ${r.release} `, badge(r.state, `rollout-${r.state}`)),
    el("p", {class: "facts"}, `to ${r.selector}, canary ${r.canary}, batch ${r.batch}, failures ${r.failures} of ` +
      `${r.failure_limit} allowed; started `, age(r.created_at), r.finished_at ? [", finished ", age(r.finished_at)] : ""),
    // A device held back by an app's update lock has the release but waits to switch: pending, shown locked.
    el("p", {class: "facts counts"}, `converged ${c.converged}/${r.total}, updating ${c.updating - (r.locked || 0)}, ` +
      `pending ${c.pending + (r.locked || 0)}${r.locked ? ` (${r.locked} locked)` : ""}, ` +
      `failed ${c.failed}, reverted ${c.reverted + c.reverting}, skipped ${c.skipped}`),
    r.reason ? el("p", {class: r.state === "aborted" ? "reason" : "facts"}, r.reason) : null,
    el("div", {class: "buttons"}, buttons),
    table(["batch", "progress", "devices"], batches(r).map(([batch, targets]) => {
      const done = targets.filter((t) => t.state === "converged").length;
      return el("tr", {"data-batch": batch}, el("td", {}, batch === 0 ? "canary" : batch),
        el("td", {}, progress(done, targets.length), ` ${done}/${targets.length}`),
        el("td", {}, targets.map((t) => {
          const locked = isLocked(t);
          return el("span", {class: "target", "data-target": t.device}, deviceLink(t.device), " ",
            locked ? badge("locked", "target-locked") : badge(t.state, `target-${t.state}`),
            t.reason ? el("span", {class: locked ? "lock-reason" : "reason"}, ` ${t.reason}`) : null);
        })));
    }), {class: "batches"}));
}

// The rollout machine's reason for a target whose device waits for an app's update lock (controller.rollout LOCKED).
function isLocked(t) {
  return t.state === "updating" && (t.reason || "").startsWith("locked by ");
}

const closedDetail = new Map();

async function rollouts() {
  const list = (await api("GET", "/v1/rollouts?limit=10")).rollouts;
  const detailed = await Promise.all(list.map(async (r) => {
    if (!r.open && closedDetail.has(r.id)) return closedDetail.get(r.id);
    const full = await api("GET", `/v1/rollouts/${r.id}`);
    if (!full.open) closedDetail.set(r.id, full);
    return full;
  }));
  return [el("p", {class: "error", id: "message"}, messageText), detailed.length ? detailed.map(rolloutCard) :
    el("p", {class: "empty"}, "no rollouts yet")];
}

async function rolloutForm() {
  const list = (await api("GET", "/v1/releases")).releases;
  const release = el("select", {name: "release", id: "release"},
    list.map((r) => el("option", {value: r.id}, `${r.app} ${r.version} (release ${r.id})`)));
  const field = (label, input) => el("label", {}, label, input);
  const selector = el("input", {name: "selector", id: "selector", value: "all", required: true});
  const canary = el("input", {name: "canary", id: "canary", type: "number", min: 0, value: 1});
  const batch = el("input", {name: "batch", id: "batch", value: "25%"});
  const failures = el("input", {name: "max_failures", id: "max_failures", value: "0"});
  const form = el("form", {id: "start-rollout", class: "inline"},
    field("release", release), field("to", selector), field("canary", canary), field("batch", batch),
    field("max failures", failures), el("button", {type: "submit"}, "Start rollout"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = list.find((r) => String(r.id) === release.value);
    if (!chosen) return;
    const numeric = (v) => (/^\d+$/.test(v) ? Number(v) : v);
    act("POST", "/v1/rollouts", {app: chosen.app, release: chosen.id, selector: selector.value,
      canary: Number(canary.value), batch: numeric(batch.value), max_failures: numeric(failures.value)});
  });
  return [el("h1", {}, "Rollouts"), form];
}

// -- the loop ----------------------------------------------------------------------------------------

const PAGES = {overview, device, releases, rollouts};
const CONTROLS = {rollouts: rolloutForm};
let busy = false;
let drawn = ""; // the content's last drawing, before its ages were filled in

async function refresh() {
  if (busy) return;
  busy = true;
  const live = document.getElementById("live");
  try {
    const parts = await PAGES[document.body.dataset.page]();
    const content = document.getElementById("content");
    const fresh = el("section", {}, parts);
    if (fresh.innerHTML !== drawn) {
      drawn = fresh.innerHTML;
      content.replaceChildren(...fresh.childNodes);
    }
    for (const t of content.querySelectorAll("time")) {
      t.textContent = t.dataset.until !== undefined ? untilText(t.dataset.until) : ageText(t.dataset.ts);
    }
    live.textContent = `live, updated ${new Date().toLocaleTimeString("en-GB")}`;
    live.className = "live ok";
  } catch (err) {
    live.textContent = `not updated: ${err.message}`;
    live.className = "live bad";
  } finally {
    busy = false;
  }
}

async function start() {
  const page = document.body.dataset.page;
  const nav = document.querySelector(`[data-nav="${page}"]`);
  if (nav) nav.classList.add("current");
  if (CONTROLS[page]) {
    try {
      document.getElementById("controls").replaceChildren(...await CONTROLS[page]());
    } catch (err) {
      document.getElementById("controls").replaceChildren(el("p", {class: "error"}, err.message));
    }
  }
  await refresh();
  window.setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
