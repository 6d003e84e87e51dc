"""`--watch`: poll the API and redraw. On a terminal, a live rich view; otherwise (a pipe, a log) one
line per change (`line(data)`, printed when it differs from the last one printed), and with --json one
JSON document per line per change, so a script or a log can follow along line by line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import RenderableType

from tinyfleet.controller.cli.common import console

T = TypeVar("T")


def watch(fetch: Callable[[], T], render: Callable[[T], RenderableType], *, line: Callable[[T], str],
          interval: float = 1.0, done: Callable[[T], bool] = lambda data: False, as_json: bool = False) -> T:
    """Show `fetch()` until `done` says so or the operator presses Ctrl-C; returns the last answer.
    `render` draws the live view on a terminal; `line` says it in one line for a pipe or a log."""
    data = fetch()
    out = console()
    try:
        if out.is_terminal and not as_json:
            from rich.live import Live
            with Live(render(data), console=out, refresh_per_second=4) as live:
                while not done(data):
                    time.sleep(interval)
                    data = fetch()
                    live.update(render(data))
            return data
        last = None
        while True:
            text = json.dumps(stable(data), sort_keys=True, default=str) if as_json else line(data)
            if text != last:
                print(json.dumps(data, sort_keys=True, default=str) if as_json else text, flush=True)
                last = text
            if done(data):
                return data
            time.sleep(interval)
            data = fetch()
    except KeyboardInterrupt:
        return data


def stable(obj: Any) -> Any:
    """Drop what changes on every poll without meaning a change (ages), so non-terminal output only
    repeats when something happened."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if k not in ("last_seen", "health", "uptime_seconds")}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj
