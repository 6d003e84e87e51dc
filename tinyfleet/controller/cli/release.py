"""`tinyfleet release create | list`: record an image as a release of an app, checked against the fleet
(platforms it runs, size budget) before any device is touched."""

from __future__ import annotations

import argparse

from tinyfleet.controller.cli import views
from tinyfleet.controller.cli.common import Exit, fail
from tinyfleet.controller.cli.connect import add_api_flags, api_command, emit
from tinyfleet.controller.client import ApiClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("release", help="create and list releases")
    cmds = group.add_subparsers(dest="release_command", metavar="COMMAND", required=True)

    c = cmds.add_parser("create", help="resolve IMAGE in the registry and record it as a release of APP; "
                                       "prints the new release's id")
    c.add_argument("app", metavar="APP")
    c.add_argument("image", metavar="IMAGE", help="REPO[:TAG] or REPO@sha256:DIGEST (a tag is pinned to its digest)")
    c.add_argument("--max-bytes", type=int, metavar="N", help="refuse it if a platform the fleet runs is bigger "
                                                               "(compressed); the agents enforce it too")
    c.add_argument("--env", action="append", default=[], metavar="K=V", help="environment for the container (repeat)")
    c.add_argument("--health-settle", type=float, metavar="S",
                   help="without a health check: seconds it must run without a restart (default 10)")
    c.add_argument("--health-deadline", type=float, metavar="S",
                   help="seconds a new container has to become healthy before the agent rolls back (default 120)")
    c.add_argument("--lock-max-wait", type=float, metavar="S",
                   help="seconds an app's update lock may hold this release back on a board, then it goes ahead "
                        "(default: until the lock is released or expires)")
    c.add_argument("--lock-endpoint", metavar="PORT[/PATH]",
                   help="the app answers whether it holds its update lock over HTTP on this port of its container "
                        "(GET PATH, default /update-lock; 423 = held): for apps with no writable file system")
    add_api_flags(c)
    c.set_defaults(handler=do_create)

    ls = cmds.add_parser("list", help="releases, newest first")
    ls.add_argument("--app", help="only this app")
    add_api_flags(ls)
    ls.set_defaults(handler=do_list)


@api_command
def do_create(args: argparse.Namespace, api: ApiClient) -> int:
    env = {}
    for item in args.env:
        key, eq, value = item.partition("=")
        if not eq or not key:
            return fail(f"--env {item!r} is not K=V", Exit.USAGE)
        env[key] = value
    health = {}
    if args.health_settle is not None:
        health["settle_seconds"] = args.health_settle
    if args.health_deadline is not None:
        health["deadline_seconds"] = args.health_deadline
    endpoint = None
    if args.lock_endpoint is not None:
        port, slash, path = args.lock_endpoint.partition("/")
        if not port.isdigit():
            return fail(f"--lock-endpoint {args.lock_endpoint!r} is not PORT or PORT/PATH", Exit.USAGE)
        endpoint = {"port": int(port), **({"path": slash + path} if slash else {})}
    release = api.create_release(args.app, args.image, max_bytes=args.max_bytes, env=env, health=health or None,
                                 lock_max_wait=args.lock_max_wait, lock_endpoint=endpoint)
    return emit(args, release, lambda r: r["id"])


@api_command
def do_list(args: argparse.Namespace, api: ApiClient) -> int:
    return emit(args, api.releases(args.app), views.releases_table)
