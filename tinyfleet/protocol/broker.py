"""Where the broker is: `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`, parsed once for both sides."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from tinyfleet.protocol.errors import ProtocolError


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or a traceback

    @classmethod
    def parse(cls, url: str, username: str | None = None, password: str | None = None, *,
              credentials_in_url: bool = True) -> BrokerAddress:
        """Credentials given separately win over ones in the URL; `credentials_in_url=False` refuses the
        latter (a service's URL ends up in logs and process lists)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ProtocolError("broker", f"{_without_credentials(url)!r} must look like mqtt://HOST[:PORT] or "
                                          "mqtts://HOST[:PORT]")
        if (parts.username or parts.password) and not credentials_in_url:
            raise ProtocolError("broker", "put the broker credentials in their own settings, not in the URL "
                                          "(URLs end up in logs and process lists)")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            raise ProtocolError("broker", f"port is not valid: {exc}") from exc
        return cls(parts.hostname, port, parts.scheme == "mqtts",
                   username or (urllib.parse.unquote(parts.username) if parts.username else None),
                   password or (urllib.parse.unquote(parts.password) if parts.password else None))

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _without_credentials(url: str) -> str:
    return url.rsplit("@", 1)[-1] if "@" in url else url
