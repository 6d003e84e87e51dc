"""What every command shares: exit codes, output (rich on a terminal, JSON for scripts), registry
access from flags and environment, and turning library errors into one clear line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from enum import IntEnum
from typing import Any

from tinyfleet.oci import errors as oe
from tinyfleet.oci.registry import Credentials, RegistryClient


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    OVER_BUDGET = 3
    PLATFORM_MISSING = 4
    NOT_FOUND = 5
    UNAVAILABLE = 6  # transient: try again later
    UNAUTHORIZED = 7
    REFUSED = 8  # the input was understood and refused (bad digest, bad media type, bad request)
    INTERRUPTED = 130


def fail(message: str, code: Exit = Exit.FAILED) -> int:
    print(f"tinyfleet: error: {message}", file=sys.stderr)
    return int(code)


def exit_for(exc: oe.OciError) -> Exit:
    return {oe.OverBudget: Exit.OVER_BUDGET, oe.PlatformMissing: Exit.PLATFORM_MISSING,
            oe.NotFound: Exit.NOT_FOUND, oe.TransportError: Exit.UNAVAILABLE,
            oe.Unauthorized: Exit.UNAUTHORIZED, oe.ImageReferenceError: Exit.USAGE,
            oe.PackError: Exit.USAGE}.get(type(exc), Exit.REFUSED)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def console() -> Any:
    from rich.console import Console  # operator-side only; imported lazily to keep --help fast
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=140)  # a log or a pipe has no width: don't squeeze tables into 80 columns
    return out


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def add_registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry-user", default=os.environ.get("TINYFLEET_REGISTRY_USER"),
                        help="registry username (env TINYFLEET_REGISTRY_USER)")
    parser.add_argument("--registry-password-file",
                        help="file holding the registry password (or env TINYFLEET_REGISTRY_PASSWORD)")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                        help="allow plain http to this registry (loopback registries always use http)")


def registry_client(args: argparse.Namespace, registry_host: str) -> RegistryClient:
    creds = {}
    if args.registry_user:
        if args.registry_password_file:
            with open(args.registry_password_file) as f:
                password = f.read().strip()
        else:
            password = os.environ.get("TINYFLEET_REGISTRY_PASSWORD", "")
        creds[registry_host] = Credentials(args.registry_user, password)
    return RegistryClient(creds, insecure_hosts=tuple(args.insecure_registry))
