"""Rich renderings of API answers: the fleet table, a device, releases, a rollout with progress bars.
Pure functions of the JSON the API returns (and the clock, for ages)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tinyfleet.controller.cli.common import human_bytes

PHASE_STYLE = {"running": "green", "failed": "red", "rolled_back": "red", "pending": "yellow",
               "verifying": "yellow", "pulling": "yellow", "starting": "yellow"}
TARGET_STYLE = {"converged": "green", "failed": "red", "updating": "yellow", "pending": "dim",
                "reverting": "magenta", "reverted": "magenta", "skipped": "dim"}
ROLLOUT_STYLE = {"running": "yellow", "paused": "cyan", "completed": "green", "aborted": "red"}


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _apps(device: dict[str, Any]) -> Text:
    text = Text()
    for i, app in enumerate(device["apps"]):
        if i:
            text.append("\n")
        release = f" r{app['release']}" if app["release"] is not None else ""
        text.append(f"{app['name']}{release} ")
        phase = app["phase"] or "no report"
        text.append(phase, style=PHASE_STYLE.get(phase, "dim"))
        if app.get("locked"):  # the update is downloaded and waits for the app's update lock
            text.append(f" (locked by {app['locked']['holder']})", style="yellow")
        if app["health"] not in (None, "none"):
            text.append(f" ({app['health']})", style="green" if app["health"] == "healthy" else "red")
    return text or Text("-", style="dim")


PROBLEM_PHASES = ("failed", "rolled_back")


def needs_attention(d: dict[str, Any]) -> bool:
    return (not d["online"] or bool(d.get("error"))
            or any(a["phase"] in PROBLEM_PHASES or a.get("error") for a in d["apps"]))


def fleet_summary(devices: list[dict[str, Any]]) -> Table:
    """What a fleet of thousands looks like in a few lines: how many are online or need attention, the
    platforms, and per app how many devices run which release in which phase."""
    platforms: dict[str, int] = {}
    phases: dict[str, dict[tuple[Any, str], int]] = {}
    for d in devices:
        platforms[d["platform"] or "?"] = platforms.get(d["platform"] or "?", 0) + 1
        for a in d["apps"]:
            key = (a["release"], a["phase"] or "no report")
            phases.setdefault(a["name"], {})[key] = phases.setdefault(a["name"], {}).get(key, 0) + 1
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    online = sum(d["online"] for d in devices)
    grid.add_row("fleet", f"{len(devices)} devices, {online} online, {len(devices) - online} offline, "
                          f"{sum(needs_attention(d) for d in devices)} need attention")
    grid.add_row("platforms", "  ".join(f"{p} {n}" for p, n in sorted(platforms.items())) or "-")
    for app, counts in sorted(phases.items()):
        text = Text()
        for i, ((release, phase), n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))):
            text.append("  " if i else "")
            text.append(f"{'r' + str(release) + ' ' if release is not None else ''}")
            text.append(phase, style=PHASE_STYLE.get(phase, "dim"))
            text.append(f" {n}")
        grid.add_row(app, text)
    return grid


def devices_table(devices: list[dict[str, Any]], now: float | None = None, limit: int | None = None) -> Group:
    """The summary, then one row per device - those that need attention (offline, failed, rolled back,
    an error) first - at most `limit` rows."""
    shown = sorted(devices, key=lambda d: not needs_attention(d))  # stable: the API's order otherwise
    hidden = len(shown) - limit if limit is not None and len(shown) > limit else 0
    caption = f"... and {hidden} more (--all lists every device)" if hidden else None
    table = Table(caption=caption, caption_justify="left")
    for col in ("device", "state", "platform", "apps", "groups", "tags", "pins", "last seen"):
        table.add_column(col)
    for d in shown[:len(shown) - hidden]:
        state = Text("online", style="green") if d["online"] else Text("offline", style="red")
        pins = ", ".join(f"{a}{'=r' + str(r) if r is not None else ''}" for a, r in d["pins"].items())
        table.add_row(d["id"], state, d["platform"] or "?", _apps(d), ", ".join(d["groups"]) or "-",
                      ", ".join(f"{k}={v}" for k, v in d["tags"].items()) or "-", pins or "-",
                      age(d["last_seen"], now))
    return Group(fleet_summary(devices), table)


def device_view(d: dict[str, Any], now: float | None = None) -> Group:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    health = d.get("health") or {}
    rows = [("device", d["id"]), ("state", "online" if d["online"] else "offline"),
            ("platform", d["platform"] or "?"), ("agent", d["agent_version"] or "?"),
            ("last seen", age(d["last_seen"], now)), ("online since", age(d["online_since"], now)),
            ("groups", ", ".join(d["groups"]) or "-"),
            ("tags", ", ".join(f"{k}={v}" for k, v in d["tags"].items()) or "-"),
            ("pins", ", ".join(f"{a}={r if r is not None else 'held'}" for a, r in d["pins"].items()) or "-"),
            ("generation", f"desired {d['desired_generation']}, reported {d['reported_generation']}"),
            ("temperature", f"{health['cpu_temp_c']:.1f} C" if health.get("cpu_temp_c") is not None else "-"),
            ("disk free", human_bytes(health.get("disk_free_bytes")))]
    if d.get("error"):
        rows.append(("error", d["error"]))
    for k, v in rows:
        facts.add_row(k, str(v))
    apps = Table(title="apps", title_justify="left")
    for col in ("app", "release", "phase", "health", "running image", "error"):
        apps.add_column(col)
    for app in d["apps"]:
        apps.add_row(app["name"], str(app["release"] or "-"),
                     Text(app["phase"] or "-", style=PHASE_STYLE.get(app["phase"] or "", "dim")),
                     app["health"] or "-", app["current_image"] or "-", app["error"] or "")
    return Group(facts, apps)


def releases_table(releases: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(releases)} releases", title_justify="left")
    for col in ("id", "app", "version", "digest", "platforms", "largest", "budget", "created"):
        table.add_column(col, justify="right" if col in ("id", "largest", "budget") else "left")
    for r in releases:
        largest = max((p["compressed_size"] for p in r["platforms"]), default=None)
        table.add_row(str(r["id"]), r["app"], r["version"], r["digest"][:19],
                      ", ".join(p["platform"] for p in r["platforms"]), human_bytes(largest),
                      human_bytes(r["max_bytes"]), age(r["created_at"]))
    return table


def rollouts_table(rollouts: list[dict[str, Any]]) -> Table:
    table = Table(title="rollouts", title_justify="left")
    for col in ("id", "app", "release", "to", "state", "converged", "failed", "pending", "started"):
        table.add_column(col)
    for r in rollouts:
        c = r["counts"]
        table.add_row(str(r["id"]), r["app"], str(r["release"]), r["selector"],
                      Text(r["state"], style=ROLLOUT_STYLE.get(r["state"], "")), f"{c['converged']}/{r['total']}",
                      str(r["failures"]), str(c["pending"] + c["updating"]), age(r["created_at"]))
    return table


def rollout_view(r: dict[str, Any], max_rows: int = 30) -> Group:
    c = r["counts"]
    total = max(1, r["total"] - c["skipped"])
    head = Text.assemble(
        (f"rollout {r['id']} ", "bold"), (r["state"], ROLLOUT_STYLE.get(r["state"], "")),
        f"  {r['app']} -> release {r['release']}  to {r['selector']}  canary {r['canary']}, batch {r['batch']}, "
        f"failures {r['failures']} of {r['failure_limit']} allowed (max failures {r['max_failures']})")
    bars = Table.grid(padding=(0, 1))
    for label, count, style in (("converged", c["converged"], "green"), ("failed", c["failed"], "red"),
                                ("updating", c["updating"], "yellow"), ("pending", c["pending"], "white"),
                                ("reverted", c["reverted"] + c["reverting"], "magenta")):
        bars.add_row(Text(f"{label:>9}", style=style),
                     ProgressBar(total=total, completed=count, width=40, complete_style=style,
                                 finished_style=style), Text(f"{count}/{total}"))
    parts: list[RenderableType] = [head, bars]
    if r.get("reason"):
        parts.append(Text(r["reason"], style="red" if r["state"] == "aborted" else "dim"))
    targets = r.get("targets") or []
    if targets:
        table = Table(show_edge=False)
        for col in ("device", "batch", "state", "reason"):
            table.add_column(col)
        # failures first (what the operator must look at), then batch by batch
        shown = sorted(targets, key=lambda t: (t["state"] != "failed", t["batch"] is None, t["batch"] or 0,
                                               t["device"]))[:max_rows]
        for t in shown:
            table.add_row(t["device"], "-" if t["batch"] is None else str(t["batch"]),
                          Text(t["state"], style=TARGET_STYLE.get(t["state"], "")), t["reason"] or "")
        if len(targets) > max_rows:
            table.caption = f"{len(targets) - max_rows} more"
        parts.append(table)
    return Group(*parts)


# -- one line per change, for a log or a pipe (watch without a terminal) ----------------------------------

def fleet_line(devices: list[dict[str, Any]]) -> str:
    """The fleet in one line: counts, per app the releases and phases, and who needs attention (and why)."""
    online = sum(d["online"] for d in devices)
    attention = [d for d in devices if needs_attention(d)]
    phases: dict[str, dict[str, int]] = {}
    for d in devices:
        for a in d["apps"]:
            key = f"{'r' + str(a['release']) + ' ' if a['release'] is not None else ''}{a['phase'] or 'no report'}"
            phases.setdefault(a["name"], {})[key] = phases.setdefault(a["name"], {}).get(key, 0) + 1
    parts = [f"fleet: {len(devices)} devices, {online} online, {len(devices) - online} offline, "
             f"{len(attention)} need attention"]
    parts += [f"{app}: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
              for app, counts in sorted(phases.items())]
    if attention:
        shown = ", ".join(f"{d['id']} ({_why(d)})" for d in attention[:5])
        parts.append(f"attention: {shown}{f' and {len(attention) - 5} more' if len(attention) > 5 else ''}")
    return "; ".join(parts)


def _why(d: dict[str, Any]) -> str:
    if not d["online"]:
        return "offline"
    if d.get("error"):
        return "refused a desired state"
    return next((f"{a['name']} {a['phase'] or 'no report'}" for a in d["apps"]
                 if a["phase"] in PROBLEM_PHASES or a.get("error")), "?")


def rollout_line(r: dict[str, Any]) -> str:
    """A rollout in one line: state, how far, and the reason once there is one."""
    c = r["counts"]
    line = (f"rollout {r['id']} {r['state']}: {r['app']} -> release {r['release']} to {r['selector']}; "
            f"converged {c['converged']}/{r['total']}, updating {c['updating']}, pending {c['pending']}, "
            f"failed {c['failed']}, reverted {c['reverted'] + c['reverting']}")
    if c["skipped"]:
        line += f", skipped {c['skipped']}"
    line += f" - {r['reason']}" if r.get("reason") else ""
    troubled = [t for t in r.get("targets") or () if t["state"] in TROUBLED_TARGETS and t["reason"]]
    shown = "; ".join(f"{t['device']} {t['state']}: {t['reason']}" for t in troubled[:3])
    return line + (f" ({shown}{f'; and {len(troubled) - 3} more' if len(troubled) > 3 else ''})" if shown else "")


TROUBLED_TARGETS = ("failed", "reverting", "reverted")
