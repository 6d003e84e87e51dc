"""`tinyfleet controller`: run the controller service until SIGTERM or SIGINT.

Logs are JSON lines when stderr is not a terminal (journald, files), readable text on a terminal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import tomllib
from pathlib import Path

import prometheus_client

from tinyfleet.agent import logs
from tinyfleet.controller.cli.common import Exit, fail
from tinyfleet.controller.errors import ControllerError
from tinyfleet.oci.registry import Credentials


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("controller", help="run the controller service (fleet registry, rollouts, API)")
    p.add_argument("--broker", default=os.environ.get("TINYFLEET_BROKER", "mqtt://127.0.0.1:1883"),
                   metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (env TINYFLEET_BROKER)")
    p.add_argument("--db", type=Path, default=Path(os.environ.get("TINYFLEET_DB", "/var/lib/tinyfleet/controller.db")),
                   metavar="PATH", help="SQLite database, and beside it the API token and signing key "
                   "(env TINYFLEET_DB; default /var/lib/tinyfleet/controller.db)")
    p.add_argument("--database", default=os.environ.get("TINYFLEET_DATABASE"), metavar="URL",
                   help="the fleet's records in postgresql://USER@HOST[:PORT]/NAME (several controllers may share "
                   "it) instead of SQLite at --db (env TINYFLEET_DATABASE)")
    p.add_argument("--share-group", metavar="NAME", default=os.environ.get("TINYFLEET_SHARE_GROUP"),
                   help="with several controllers on one --database: split the device reports between them as "
                   "MQTT shared subscriptions ($share/NAME/...); a stopped member's share waits for it in the broker")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="API address (default 127.0.0.1:8080; loopback unless you put TLS in front)")
    p.add_argument("--token-file", type=Path, metavar="PATH",
                   help="API token, generated 0600 on first start (default: api-token beside the database)")
    p.add_argument("--heartbeat-interval", type=float, default=30.0, metavar="S",
                   help="the agents' heartbeat interval (default 30)")
    p.add_argument("--missed-heartbeats", type=int, default=3, metavar="N",
                   help="a device is offline after this many missed heartbeats (default 3)")
    p.add_argument("--tick", type=float, default=1.0, metavar="S", help="rollout engine pass interval (default 1)")
    p.add_argument("--broker-username", default=os.environ.get("TINYFLEET_BROKER_USERNAME"))
    p.add_argument("--broker-password-file", type=Path, metavar="PATH",
                   help="file holding the broker password (or env TINYFLEET_BROKER_PASSWORD)")
    p.add_argument("--broker-ca-file", type=Path, metavar="PATH",
                   default=Path(os.environ["TINYFLEET_BROKER_CA_FILE"]) if os.environ.get("TINYFLEET_BROKER_CA_FILE")
                   else None,
                   help="mqtts: trust only this CA certificate (PEM) for the broker (env TINYFLEET_BROKER_CA_FILE)")
    p.add_argument("--registry-credentials", type=Path, metavar="PATH",
                   help='TOML: ["registry.example.com"] username = "..." password_file = "..."')
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain http to this registry (loopback registries always use http)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    p.set_defaults(handler=do_controller)


def configure_logging(fmt: str) -> None:
    logs.configure("info", json=None if fmt == "auto" else fmt == "json")


def registry_credentials(path: Path | None) -> dict[str, Credentials]:
    if path is None:
        return {}
    doc = tomllib.loads(path.read_text())
    creds = {}
    for host, entry in doc.items():
        if not isinstance(entry, dict) or "username" not in entry:
            raise ValueError(f"{path}: [{host}] needs username and password_file (or password)")
        password = Path(entry["password_file"]).read_text().strip() if "password_file" in entry \
            else str(entry.get("password", ""))
        creds[host] = Credentials(str(entry["username"]), password)
    return creds


def do_controller(args: argparse.Namespace) -> int:
    from tinyfleet.controller.service import Controller, ControllerConfig  # the service stack only when serving

    configure_logging(args.log_format)
    prometheus_client.disable_created_metrics()  # the *_created series only double the scrape
    try:
        password = (args.broker_password_file.read_text().strip() if args.broker_password_file
                    else os.environ.get("TINYFLEET_BROKER_PASSWORD"))
        config = ControllerConfig(
            db=args.db, broker=args.broker, listen=args.listen, token_file=args.token_file,
            heartbeat_interval=args.heartbeat_interval, missed_heartbeats=args.missed_heartbeats,
            tick_interval=args.tick, broker_username=args.broker_username, broker_password=password,
            broker_ca_file=args.broker_ca_file,
            registry_credentials=registry_credentials(args.registry_credentials),
            insecure_registries=tuple(args.insecure_registry), database=args.database,
            share_group=args.share_group)
        controller = Controller(config).start()
    except (ControllerError, ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        return fail(f"controller did not start: {exc}", Exit.USAGE if isinstance(exc, ValueError) else Exit.FAILED)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"tinyfleet controller: API {controller.url} (token in {config.token_path})", file=sys.stderr, flush=True)
    stop.wait()
    controller.stop()
    return Exit.OK
