"""`tinyfleet`: the operator's command line. Each command group lives in its own module and
registers itself here; handlers return the process exit code (see tinyfleet.controller.cli.common.Exit)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tinyfleet.controller.cli.common import Exit, fail

# What only the operator extra installs: an agent-only install (`pip install tinyfleet`) has none of it.
OPERATOR_MODULES = {"rich", "fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "serial",
                    "cryptography", "httpx"}


def build_parser() -> argparse.ArgumentParser:
    from tinyfleet.controller.cli import devices, image, provision, release, rollout, serve, signingkey

    parser = argparse.ArgumentParser(
        prog="tinyfleet", description="Deploy tiny multi-arch containers to fleets of small ARM boards.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (image, serve, signingkey, devices, release, rollout, provision):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPERATOR_MODULES:
            raise
        return fail(f"the operator commands need the operator extra (missing: {exc.name}): "
                    "pip install 'tinyfleet[operator]'; this install has the agent only (tinyfleet-agent)", Exit.USAGE)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return fail("interrupted", Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
