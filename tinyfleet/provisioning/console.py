"""The serial console, through pyserial: a local port (/dev/ttyUSB0), socket://HOST:PORT or
rfc2217://HOST:PORT. Reads keep a bounded transcript for error messages, with secrets redacted;
pyserial's exceptions become ConsoleError/ConsoleClosed here and nowhere else."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import serial

from tinyfleet.provisioning.errors import ConsoleClosed, ConsoleError

TRANSCRIPT_LIMIT = 16384
REDACTED = "<redacted>"


class Console:
    def __init__(self, port: serial.SerialBase, url: str = "") -> None:
        self.port = port
        self.url = url or str(getattr(port, "port", "console"))
        self._transcript = ""
        self._secrets: set[str] = set()
        self._recording = True

    @classmethod
    def open(cls, url: str, baud: int = 115200, bytesize: int = 8, parity: str = "N", stopbits: float = 1) -> Console:
        try:
            port = serial.serial_for_url(url, baudrate=baud, bytesize=bytesize, parity=parity, stopbits=stopbits,
                                         timeout=0.05, write_timeout=10, exclusive=True if "://" not in url else None)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise ConsoleError(f"cannot open the console {url}: {exc}") from exc
        return cls(port, url)

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- secrets -------------------------------------------------------------------------------------
    def redact(self, secret: str) -> None:
        """Never show `secret` in a transcript (it may come back as terminal echo)."""
        if secret:
            self._secrets.add(secret)

    @contextlib.contextmanager
    def unrecorded(self, placeholder: str) -> Iterator[None]:
        """Keep what crosses the line inside this block out of the transcript entirely."""
        self._recording = False
        try:
            yield
        finally:
            self._recording = True
            self._record(f"[{placeholder}]\n")

    def transcript(self) -> str:
        text = self._transcript
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def _record(self, text: str) -> None:
        self._transcript = (self._transcript + text)[-TRANSCRIPT_LIMIT:]

    # --- I/O -----------------------------------------------------------------------------------------
    def write(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        try:
            self.port.write(raw)
            self.port.flush()
        except (serial.SerialException, OSError) as exc:
            raise ConsoleClosed(f"the console {self.url} dropped while writing: {exc}") from exc

    def read(self, timeout: float) -> str:
        """Whatever arrives within `timeout` seconds (returns early once data stops flowing)."""
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while time.monotonic() < deadline:
            try:
                waiting = self.port.in_waiting
                data = self.port.read(max(1, waiting))
            except (serial.SerialException, OSError) as exc:
                raise ConsoleClosed(f"the console {self.url} dropped: {exc}") from exc
            if data:
                chunks.append(data)
            elif chunks:
                break
        text = b"".join(chunks).decode("utf-8", errors="replace")
        if self._recording and text:
            self._record(text)
        return text

    def expect(self, pattern: re.Pattern[str], timeout: float, buffer: str = "") -> tuple[re.Match[str] | None, str]:
        """Read until `pattern` matches the accumulated text; (match or None on timeout, text)."""
        deadline = time.monotonic() + timeout
        text = buffer
        while True:
            match = pattern.search(text)
            if match or time.monotonic() >= deadline:
                return match, text
            text += self.read(min(0.2, max(0.01, deadline - time.monotonic())))
