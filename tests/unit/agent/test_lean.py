"""The agent's entry point leaves unimported what it never uses (agent/lean.py) without breaking
anything that does use it: asyncio and ssl load on first use, requests works without charset_normalizer,
hashlib without OpenSSL."""

from __future__ import annotations

import hashlib
import subprocess
import sys

PROBE = """
import sys, warnings
warnings.simplefilter("error")
from tinyfleet.agent import lean
lean.trim_imports()
import structlog, tenacity
assert "asyncio.base_events" not in sys.modules, "structlog's asyncio is not loaded until used"
with lean.docker_import("unix:///var/run/docker.sock"):
    import requests
assert "charset_normalizer.api" not in sys.modules
response = requests.models.Response()
response._content = b'{"ok": true}'
assert response.json() == {"ok": True} and response.apparent_encoding == "utf-8"
import asyncio
async def answer():
    await asyncio.sleep(0)
    return 42
assert asyncio.run(answer()) == 42 and "asyncio.base_events" in sys.modules
from asyncio import events
assert sys.modules["asyncio"].get_event_loop_policy is events.get_event_loop_policy
print("ok")
"""


def test_the_agent_process_defers_asyncio_and_does_without_charset_detection() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


AGENT_ON_PLAIN_LINKS = """
import sys
from tinyfleet.agent import cli, lean
lean.trim_imports()
import hashlib, tempfile
from tinyfleet.agent.config import load
config = load(None, {"device_id": "probe", "broker": "mqtt://127.0.0.1:9", "state_dir": tempfile.mkdtemp(),
                     "docker_host": "unix:///nonexistent/docker.sock", "insecure_accept_unsigned": True})
cli.build(config)
maps = open("/proc/self/maps").read()
assert "_ssl" not in sys.modules and "libssl" not in maps and "libcrypto" not in maps, "no TLS in use yet"
print(hashlib.sha256(b"tinyfleet").hexdigest(), hashlib.sha512(b"tinyfleet").hexdigest())
import http.client
http.client.HTTPSConnection("localhost", 9)  # an https registry: ssl and its default context load now
import ssl
assert "_ssl" in sys.modules and ssl.SSLContext is sys.modules["ssl"].SSLContext
"""

ENGINE_OVER_TCP = """
from tinyfleet.agent import lean
lean.trim_imports()
with lean.docker_import("tcp://127.0.0.1:2376"):
    import docker, urllib3.util.ssl_
assert urllib3.util.ssl_.ssl is not None and urllib3.util.ssl_.HAS_NEVER_CHECK_COMMON_NAME is not None
print("ok")
"""


def test_an_agent_on_mqtt_a_unix_engine_and_http_registries_never_loads_openssl_until_tls_is_used() -> None:
    done = subprocess.run([sys.executable, "-c", AGENT_ON_PLAIN_LINKS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = f"{hashlib.sha256(b'tinyfleet').hexdigest()} {hashlib.sha512(b'tinyfleet').hexdigest()}"
    assert done.stdout.strip() == expected, "hashlib's built-in digests are OpenSSL's"


def test_an_engine_over_tcp_keeps_tls_in_the_docker_sdk() -> None:
    done = subprocess.run([sys.executable, "-c", ENGINE_OVER_TCP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
