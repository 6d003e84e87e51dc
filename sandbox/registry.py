"""A private Docker distribution registry on a loopback port, filesystem storage."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from sandbox.prereqs import require
from sandbox.process import ManagedProcess, free_port, wait_until

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: tinyfleet-sandbox-{port}
"""


class Registry:
    def __init__(self, root: Path, port: int | None = None) -> None:
        require("docker-registry")
        self.root = root
        self.port = port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yml"
        self.config.write_text(CONFIG.format(port=self.port, data=root / "data"))
        self.proc = ManagedProcess("docker-registry", ["docker-registry", "serve", str(self.config)],
                                   root / "registry.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.proc.start()

        def ready() -> bool:
            self.proc.check_alive()
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                return r.status == 200

        wait_until(ready, 20, "docker-registry", self.proc.log)
        return self

    def stop(self) -> None:
        self.proc.stop()
