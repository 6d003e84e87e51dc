"""Keeping the running agent small (issue 12): what its process leaves unimported until it is needed
(asyncio, ssl, OpenSSL's hashlib backend, charset_normalizer). Called by the agent's own entry point
only (`tinyfleet.agent.cli.main`, before the libraries are imported); a library user of `agent` (the
controller, the tests, the fleet simulator) gets every module as usual.

What the agent's libraries import but the running agent uses seldom or never:

- asyncio (~1.9 MiB, 41 modules): `import structlog` imports `structlog.stdlib` and `structlog._native`
  unconditionally, and they `import asyncio` only for their async logging methods. The agent logs from
  threads and never calls those. Python 3.11's `importlib.util.LazyLoader` cannot defer it (`import`
  itself reads the module's `__spec__`, which loads a lazy module at once), so asyncio gets a PEP 562
  placeholder whose first attribute access imports the real module and hands over to it.
- charset_normalizer (~2.6 MiB with unicodedata): requests imports it to guess the encoding of a
  response without a charset. The agent's only requests user is the docker SDK, and the Docker Engine
  answers in JSON (UTF-8; requests reads `application/json` as UTF-8 without guessing). requests
  supports its absence (`apparent_encoding` is then "utf-8") and warns once at import; the agent
  blocks it (None in sys.modules makes its import fail, as documented for the import system) and
  silences that one warning where docker is imported (`docker_import`).
- ssl and OpenSSL (~4.7 MiB with libcrypto and libssl mapped): a board on `mqtt://` with its Engine on the
  unix socket and http registries never makes a TLS connection. ssl is deferred like asyncio, so
  http.client, urllib.request and paho import it as a placeholder and keep their TLS support: the first
  mqtts connection or https registry request loads it (then it stays, as usual). urllib3 and requests
  would read it at import (`from ssl import ...`, `ssl.HAS_SNI`), so `docker_import` hides it from them when
  the Engine is on a unix socket: the docker SDK's own HTTP stack then has no TLS, which that socket
  never needs (a `tcp://` Engine imports them with ssl). `_hashlib` (hashlib's OpenSSL backend) is
  blocked: hashlib falls back to its built-in SHA-256/SHA-512 (same digests; the agent hashes manifests
  and signed documents of a few KiB), so libcrypto is not mapped until TLS needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings
from collections.abc import Iterator

DEFERRED = ("asyncio", "ssl")
BLOCKED = ("charset_normalizer", "_hashlib")
UNIX_ENGINE = ("unix://", "http+unix://")
_NO_DETECTOR = "Unable to find acceptable character detection dependency"


class _Deferred(types.ModuleType):
    """Stands in for a module until something uses it; then the real module replaces it everywhere
    the import system looks (later `import`s), and attribute reads through this object are forwarded."""

    def __getattr__(self, attr: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def trim_imports() -> None:
    """Before the agent's libraries are imported: defer and block what the agent never uses. Modules
    already imported (another entry point, a test) are left as they are."""
    for name in DEFERRED:
        if name not in sys.modules:
            placeholder = _Deferred(name)
            placeholder.__spec__ = None  # the import system reads it on every `import name`
            sys.modules[name] = placeholder
    for name in BLOCKED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


@contextlib.contextmanager
def docker_import(engine_url: str) -> Iterator[None]:
    """Around the first import of docker (and so requests and urllib3): silence requests' one warning
    about the blocked detector and, for an Engine on a unix socket, hide a still-deferred ssl from them."""
    placeholder = sys.modules.get("ssl")
    hide = engine_url.startswith(UNIX_ENGINE) and isinstance(placeholder, _Deferred)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_DETECTOR)
        if hide:
            sys.modules["ssl"] = None  # type: ignore[assignment]
        try:
            yield
        finally:
            if hide and sys.modules.get("ssl") is None:
                sys.modules["ssl"] = placeholder  # type: ignore[assignment]
