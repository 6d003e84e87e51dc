"""FAT file systems inside an image file or a partition of one, edited with mtools (`-i FILE@@OFFSET`):
no root, no mount.

FAT names are case-insensitive and a name may exist as a short 8.3 entry (CMDLINE.TXT), a short
entry with the lower-case flag (cmdline.txt) or a long name. mtools, asked to overwrite
`cmdline.txt` when `CMDLINE.TXT` exists, replaces the file but renames it; so every write first
looks the name up case-insensitively and writes to the entry's own spelling. A file is therefore
never duplicated, never renamed, and never lost (mtools writes the new data before it frees the old).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tinyfleet.provisioning.errors import FatError

TIMEOUT = 60


def require_mtools() -> None:
    if shutil.which("mcopy") is None:
        raise FatError("mtools is missing (Debian: apt-get install mtools); `bash scripts/dev.sh setup` installs it")


class FatVolume:
    """One FAT file system at byte `offset` of `image` (a file or a block device)."""

    def __init__(self, image: Path, offset: int = 0) -> None:
        require_mtools()
        self.image = Path(image)
        self.offset = offset

    @property
    def _drive(self) -> str:
        return f"{self.image}@@{self.offset}"

    def _run(self, tool: str, *args: str) -> bytes:
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull, "MTOOLS_NO_VFAT": "0",
               "LC_ALL": "C.UTF-8"}
        argv = [tool, "-i", self._drive, *args]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FatError(f"{tool} could not run on {self._drive}: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise FatError(f"{tool} {' '.join(args)} on {self._drive} failed: {detail}")
        return done.stdout

    def list(self, folder: str = "") -> list[str]:
        """Names in `folder` (root when empty), as stored: long name if there is one, else the 8.3 name.
        Folders end in '/'."""
        out = self._run("mdir", "-a", "-b", f"::/{folder.strip('/')}")
        prefix = f"::/{folder.strip('/')}/" if folder.strip("/") else "::/"
        names = []
        for line in out.decode("utf-8", errors="replace").splitlines():
            if line.startswith(prefix) and line != prefix:
                names.append(line[len(prefix):])
        return names

    def find(self, path: str) -> str | None:
        """The stored spelling of `path` (e.g. 'tinyfleet/agent.toml'), matched case-insensitively."""
        folder, _, name = path.strip("/").rpartition("/")
        if folder:
            stored_folder = self.find(folder + "/")
            if stored_folder is None:
                return None
            folder = stored_folder.rstrip("/")
        want = name.lower() + ("/" if path.endswith("/") else "")
        for stored in self.list(folder):
            if stored.lower() == want or stored.lower().rstrip("/") == want.rstrip("/"):
                return f"{folder}/{stored}" if folder else stored
        return None

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def read(self, path: str) -> bytes:
        stored = self.find(path)
        if stored is None or stored.endswith("/"):
            raise FatError(f"{path} is not a file on the FAT volume at {self._drive}")
        return self._run("mcopy", "-n", f"::/{stored}", "-")

    def read_text(self, path: str, default: str | None = None) -> str | None:
        if default is not None and not self.exists(path):
            return default
        return self.read(path).decode("utf-8", errors="surrogateescape")

    def mkdir(self, folder: str) -> str:
        stored = self.find(folder.rstrip("/") + "/")
        if stored is not None:
            return stored.rstrip("/")
        self._run("mmd", f"::/{folder.strip('/')}")
        return folder.strip("/")

    def write(self, path: str, data: bytes) -> None:
        folder, _, name = path.strip("/").rpartition("/")
        if folder:
            folder = self.mkdir(folder)
        stored = self.find(path)
        target = stored if stored is not None else (f"{folder}/{name}" if folder else name)
        if target.endswith("/"):
            raise FatError(f"{path} is a folder on the FAT volume; refusing to replace it with a file")
        with tempfile.NamedTemporaryFile(prefix="tinyfleet-fat-") as tmp:
            tmp.write(data)
            tmp.flush()
            self._run("mcopy", "-o", "-n", "-D", "o", tmp.name, f"::/{target}")

    def label(self) -> str:
        """The volume label ('' when there is none)."""
        out = self._run("mlabel", "-s", "::").decode("utf-8", errors="replace").strip()
        prefix = "Volume label is "
        return out[len(prefix):].strip() if out.startswith(prefix) else ""

    def set_label(self, label: str) -> None:
        self._run("mlabel", f"::{label}")

    def delete(self, path: str) -> None:
        stored = self.find(path)
        if stored is not None:
            self._run("mdel", f"::/{stored}")
