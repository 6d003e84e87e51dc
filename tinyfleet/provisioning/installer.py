"""How the agent is installed on a board, as named POSIX shell steps. The serial console runs them one
by one (each with its own timeout and error); first boot runs the same steps as one script. The
systemd unit always comes from the installed package, never from a copy of its text here."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from tinyfleet.provisioning.device import VENV

UNIT_NAME = "tinyfleet-agent.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
# The agent ships its unit as package data (see the agent's contract); print it from the installed package.
PRINT_UNIT = ("import importlib.resources as r, sys; "
              "sys.stdout.write(r.files('tinyfleet.agent').joinpath('units/tinyfleet-agent.service').read_text())")


@dataclass(frozen=True)
class AgentSource:
    """Where pip finds the agent: a wheelhouse folder on the board (`find_links`: no index at all), a single
    wheel on the board (its dependencies from the index), else the index (PyPI when None)."""

    index_url: str | None = None
    wheel_path: str | None = None
    find_links: str | None = None
    pinned: str = "tinyfleet"  # with find_links: e.g. tinyfleet==0.1.0, the version the wheelhouse holds

    def requirement(self) -> str:
        if self.find_links:
            return self.pinned
        return self.wheel_path or "tinyfleet"


@dataclass(frozen=True)
class Step:
    name: str
    command: str
    timeout: float = 30.0


def agent_steps(source: AgentSource) -> list[Step]:
    venv = shlex.quote(VENV)
    pip = [f"{venv}/bin/pip", "install", "--disable-pip-version-check", "--no-input", "--quiet", "--upgrade"]
    if source.find_links:
        pip += ["--no-index", "--find-links", shlex.quote(source.find_links)]
    elif source.index_url:
        pip += ["--index-url", shlex.quote(source.index_url)]
    pip.append(shlex.quote(source.requirement()))
    unit = shlex.quote(UNIT_PATH)
    return [
        Step("create venv", f"[ -x {venv}/bin/python ] || python3 -m venv {venv}", 180),
        Step("install agent", " ".join(pip), 900),
        Step("install unit", f"{venv}/bin/python -c {shlex.quote(PRINT_UNIT)} > {unit}.tmp && "
                             f"chmod 0644 {unit}.tmp && mv -f {unit}.tmp {unit}", 60),
        Step("enable agent", f"systemctl daemon-reload && systemctl enable {UNIT_NAME} && "
                             f"systemctl restart {UNIT_NAME}", 90),
        Step("verify agent active", f"for i in 1 2 3 4 5 6 7 8 9 10; do systemctl is-active --quiet {UNIT_NAME} "
                                    f"&& exit 0; sleep 1; done; systemctl status --no-pager {UNIT_NAME}; exit 1", 30),
    ]


def as_script(steps: list[Step], header: str) -> str:
    """The steps as one `set -eu` script that says which step failed."""
    lines = ["#!/bin/sh", header, "set -eu"]
    for step in steps:
        lines.append(f"echo {shlex.quote('tinyfleet: ' + step.name)}")
        lines.append(f"( {step.command} ) || {{ echo {shlex.quote('tinyfleet: step failed: ' + step.name)} >&2; "
                     "exit 1; }")
    return "\n".join(lines) + "\n"
