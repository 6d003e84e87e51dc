"""A private Mosquitto broker on a loopback port, with persistence so restarts keep retained
messages and persistent sessions, and queues sized for bursts (the default 1000 drops QoS 1)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from controller.sandbox.prereqs import require
from controller.sandbox.process import ManagedProcess, free_port, port_open, wait_until

CONFIG = """\
# run as whoever started it: as root, Mosquitto would otherwise switch to user "mosquitto", which cannot
# write the persistence file in this private (0700) directory
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 1
max_queued_messages {max_queued}
max_inflight_messages 100
max_connections -1
max_packet_size 270000
log_type error
log_type warning
log_type notice
connection_messages false
"""


class Mosquitto:
    def __init__(self, root: Path, port: int | None = None, max_queued: int = 100_000) -> None:
        require("mosquitto")
        self.root = root
        self.port = port or free_port()
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = root / "mosquitto.conf"
        self.config.write_text(CONFIG.format(port=self.port, data=self.data, max_queued=max_queued,
                                              user=pwd.getpwuid(os.getuid()).pw_name))
        self.proc = ManagedProcess("mosquitto", ["mosquitto", "-c", str(self.config)], root / "mosquitto.log")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc.start()
        wait_until(lambda: self.proc.check_alive() is None and port_open(self.port), 15, "mosquitto", self.proc.log)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
