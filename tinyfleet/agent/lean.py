"""Keeping the running agent small (issue 12): what its process leaves unimported, and giving freed
heap back to the system. Called by the agent's own entry point only (`tinyfleet.agent.cli.main`, before the
libraries are imported); a library user of `agent` (the controller, the tests, the fleet simulator)
gets every module as usual.

Two modules that the agent's libraries import but the agent never uses:

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
  silences that one warning where docker is imported (`quiet_requests`).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings
from collections.abc import Iterator

DEFERRED = ("asyncio",)
BLOCKED = ("charset_normalizer",)
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
def quiet_requests() -> Iterator[None]:
    """Around the first import of docker (and so requests): its one warning about the blocked detector."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_DETECTOR)
        yield
