"""What the agent's imports cost, step by step, in a fresh interpreter of the agent-only install: the
resident memory each group of modules adds when imported in the order the agent imports them, after
`tinyfleet.agent.lean.trim_imports()` as the agent's entry point does it. The last step is what TLS adds
when the agent first needs it (not part of an agent on mqtt:// with http registries)."""

from __future__ import annotations

import json
import subprocess

DOCKER = "with tinyfleet.agent.lean.docker_import('unix:///var/run/docker.sock'): "
STEPS = (
    ("agent entry point (agent.cli, agent.lean)", "import tinyfleet.agent.cli; tinyfleet.agent.lean.trim_imports()"),
    ("logging, dataclasses, typing, socket", "import logging, dataclasses, typing, socket, threading, json"),
    ("hashlib (built-in SHA-2, no libcrypto)", "import hashlib"),
    ("protocol (the wire contract)", "import tinyfleet.protocol"),
    ("structlog (asyncio deferred)", "import structlog"),
    ("tenacity", "import tenacity"),
    ("http.client, email, urllib.request (ssl deferred)", "import http.client, ssl, urllib.request"),
    ("agent.logs, agent.config, oci.registry", "import tinyfleet.agent.logs, tinyfleet.agent.config, "
                                                 "tinyfleet.oci.registry"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("urllib3 (importlib.metadata, zipfile, csv; no ssl)", DOCKER + "import urllib3"),
    ("requests (charset_normalizer blocked)", DOCKER + "import requests"),
    ("docker SDK", DOCKER + "import docker"),
    ("the agent's own modules", "import tinyfleet.agent.service, tinyfleet.agent.engine, "
                                 "tinyfleet.agent.verifier, tinyfleet.agent.board"),
    ("(an mqtts broker or https registry: ssl, OpenSSL)", "import ssl; ssl.create_default_context()"),
)

_PROBE = """
import json, sys
sys.path[:] = [p for p in sys.path if not p.endswith("dist-packages")]  # as in a venv (see bench/qemu_user.py)
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmRSS:'))
out = [("bare interpreter", rss(), len(sys.modules))]
for label, code in json.loads(sys.argv[1]):
    exec(code)
    out.append((label, rss(), len(sys.modules)))
print(json.dumps(out))
"""


def import_costs(python: list[str], env: dict[str, str] | None = None) -> list[tuple[str, int, int]]:
    """(step, resident bytes after it, modules loaded after it) for each step; `python` is the command
    that starts the interpreter. Under qemu-user VmRSS includes the emulator: read the steps' differences."""
    done = subprocess.run([*python, "-c", _PROBE, json.dumps(STEPS)], capture_output=True, text=True, check=True,
                          cwd="/", timeout=300, env=env)
    return [tuple(row) for row in json.loads(done.stdout)]  # type: ignore[misc]
