"""`tinyfleet demo`: the main job - see controller/demo.py."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the whole story on this machine: images, controller, three emulated "
                                    "boards, staged rollouts and an automatic rollback")
    p.add_argument("--broker", metavar="URL", help="use this broker instead of a private one")
    p.add_argument("--registry", metavar="HOST:PORT", help="use this registry instead of a private one")
    p.add_argument("--docker-host", metavar="URL", help="use this Docker Engine instead of a private one")
    p.add_argument("--keep", action="store_true", help="keep the demo's directory (logs, database) afterwards")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from controller.demo import Options, run  # heavy imports only when the demo runs

    return run(Options(broker=args.broker, registry=args.registry, docker_host=args.docker_host, keep=args.keep))
