"""`tinyfleet-agent`: load the configuration, find out what board this is, and run."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tinyfleet.agent import __version__, lean
from tinyfleet.agent.errors import ConfigError

if TYPE_CHECKING:
    from tinyfleet.agent.config import AgentConfig

# The libraries (structlog, tenacity, docker, paho) are imported inside main(), after lean.trim_imports()
# has set aside what the running agent never uses (see agent/lean.py); --help and --version need none.


def unit_text() -> str:
    from importlib import resources  # only for --print-unit: it brings tempfile, shutil, zipfile, lzma

    return resources.files("tinyfleet.agent").joinpath("units/tinyfleet-agent.service").read_text()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyfleet-agent",
                                description="Run tinyfleet's agent: reconcile this board's desired apps with Docker.")
    p.add_argument("--config", type=Path, help="TOML file (default /etc/tinyfleet/agent.toml; env TINYFLEET_CONFIG)")
    p.add_argument("--device-id", help="this device's id (default: from the board's serial number or machine id)")
    p.add_argument("--broker", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    p.add_argument("--docker-host", help="Docker Engine URL (default unix:///var/run/docker.sock)")
    p.add_argument("--platform", help="act as this platform, e.g. linux/arm/v7 (default: detected)")
    p.add_argument("--state-dir", help="where the agent keeps its state (default /var/lib/tinyfleet)")
    p.add_argument("--max-image-bytes", type=int, help="default compressed size budget per image")
    p.add_argument("--heartbeat-seconds", type=float, help="health message and resync interval (default 30)")
    p.add_argument("--controller-key", help="the controller's public key, ed25519:BASE64 (its signing-key.pub)")
    p.add_argument("--insecure-accept-unsigned", action="store_true", default=None,
                   help="run without a controller key, accepting unsigned desired states from any broker client")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--check", action="store_true", help="validate the configuration, print it, and exit")
    p.add_argument("--print-unit", action="store_true", help="print the systemd unit and exit")
    p.add_argument("--version", action="version", version=f"tinyfleet-agent {__version__}")
    return p


def build(config: AgentConfig):  # type: ignore[no-untyped-def]
    from tinyfleet.agent import board
    from tinyfleet.agent.service import Agent
    from tinyfleet.agent.verifier import RegistryVerifier
    from tinyfleet.oci.registry import RegistryClient

    with lean.docker_import(config.docker_host):
        from tinyfleet.agent.engine import DockerEngine

    creds = {host: r.credentials for host, r in config.registries.items() if r.credentials}
    insecure = tuple(host for host, r in config.registries.items() if r.insecure)
    engine = DockerEngine(config.docker_host, registry_auth=creds)
    engine_arch = None
    try:
        engine_arch = engine.api.info().get("Architecture")
    except Exception:  # noqa: BLE001 - the engine may be down at boot; the CPU still tells the platform
        engine_arch = None
    platform = config.platform or board.local_platform(engine_arch)
    device_id = config.device_id or board.device_id()
    if not device_id:
        raise ConfigError("no device id: set device_id, TINYFLEET_DEVICE_ID or --device-id "
                          "(no serial number or /etc/machine-id to derive one from)")
    verifier = RegistryVerifier(RegistryClient(creds, insecure_hosts=insecure, attempts=1))
    return Agent(config, device_id, platform, engine, verifier)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.print_unit:
        sys.stdout.write(unit_text())
        return 0
    flags = {"device_id": args.device_id, "broker": args.broker, "docker_host": args.docker_host,
             "platform": args.platform, "state_dir": args.state_dir, "max_image_bytes": args.max_image_bytes,
             "heartbeat_seconds": args.heartbeat_seconds, "log_level": args.log_level,
             "controller_key": args.controller_key, "insecure_accept_unsigned": args.insecure_accept_unsigned}
    lean.trim_imports()
    from tinyfleet.agent import logs
    from tinyfleet.agent.config import load

    try:
        config = load(args.config, flags)
        logs.configure(config.log_level)
        if args.check:
            print(config)
            return 0
        agent = build(config)
    except ConfigError as exc:
        print(f"tinyfleet-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
