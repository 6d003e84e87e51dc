"""A private Mosquitto broker on a loopback port, with persistence so restarts keep retained
messages and persistent sessions, and queues sized for bursts (the default 1000 drops QoS 1).

By default anyone may connect and use any topic (what most tests need). Locked down (`lockdown=`), it is
the production broker in small: no anonymous clients, a password file and an ACL (those `tinyfleet
provision credentials` writes), the plain listener for the controller on loopback and a TLS listener for
devices; `reload()` is the operator's `kill -HUP` after a revocation."""

from __future__ import annotations

import os
import pwd
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.prereqs import require
from sandbox.process import ManagedProcess, free_port, port_open, wait_until

if TYPE_CHECKING:  # cryptography only where certificates are made
    from sandbox.certificates import ServerCertificates

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
AUTHENTICATED = """\
allow_anonymous false
password_file {password_file}
acl_file {acl_file}
"""
TLS_LISTENER = """\
listener {tls_port} 127.0.0.1
certfile {cert_file}
keyfile {key_file}
tls_version tlsv1.2
"""


@dataclass(frozen=True)
class Lockdown:
    password_file: Path
    acl_file: Path
    certificates: ServerCertificates


class Mosquitto:
    def __init__(self, root: Path, port: int | None = None, max_queued: int = 100_000,
                 lockdown: Lockdown | None = None) -> None:
        require("mosquitto")
        self.root = root
        self.port = port or free_port()
        self.lockdown = lockdown
        self.tls_port = free_port() if lockdown else None
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = root / "mosquitto.conf"
        config = CONFIG.format(port=self.port, data=self.data, max_queued=max_queued,
                               user=pwd.getpwuid(os.getuid()).pw_name)
        if lockdown:
            config = config.replace("allow_anonymous true\n", AUTHENTICATED.format(
                password_file=lockdown.password_file, acl_file=lockdown.acl_file)) + TLS_LISTENER.format(
                tls_port=self.tls_port, cert_file=lockdown.certificates.cert_file,
                key_file=lockdown.certificates.key_file)
        self.config.write_text(config)
        self.proc = ManagedProcess("mosquitto", ["mosquitto", "-c", str(self.config)], root / "mosquitto.log")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise ValueError("this broker has no TLS listener (start it with lockdown=)")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self) -> Mosquitto:
        self.proc.start()
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        wait_until(lambda: self.proc.check_alive() is None and all(port_open(p) for p in ports), 15, "mosquitto",
                   self.proc.log)
        return self

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password file and ACL again and drops clients no longer allowed."""
        if self.proc.proc is None:
            raise ValueError("mosquitto is not running")
        os.kill(self.proc.proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        self.proc.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
