"""`tinyfleet`: the operator's command line. Each command group lives in its own module and
registers itself here; handlers return the process exit code (see controller.cli.common.Exit)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller.cli import demo, devices, image, provision, release, rollout, serve, signingkey
from controller.cli.common import Exit, fail

GROUPS = (demo, image, serve, signingkey, devices, release, rollout, provision)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyfleet", description="Deploy tiny multi-arch containers to fleets of small ARM boards.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return fail("interrupted", Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
