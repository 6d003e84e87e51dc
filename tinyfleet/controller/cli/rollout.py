"""`tinyfleet rollout start | status | pause | resume | abort`.

`status --watch` (and `start --watch`) follow a rollout live until it settles; their exit code says
how it ended: 0 completed, 1 aborted (Exit.FAILED).
"""

from __future__ import annotations

import argparse
from typing import Any

from tinyfleet.controller.cli import views
from tinyfleet.controller.cli.common import Exit, fail
from tinyfleet.controller.cli.connect import add_api_flags, api_command, emit
from tinyfleet.controller.cli.live import watch
from tinyfleet.controller.client import ApiClient


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("rollout", help="move an app of many devices to a release, canary first")
    cmds = group.add_subparsers(dest="rollout_command", metavar="COMMAND", required=True)

    s = cmds.add_parser("start", help="start a staged rollout; prints its id")
    s.add_argument("app", metavar="APP")
    s.add_argument("release", metavar="RELEASE", help="release id or version")
    s.add_argument("--to", required=True, metavar="SELECTOR",
                   help="all | device:ID[,ID...] | group:NAME | tag:KEY=VALUE")
    s.add_argument("--canary", type=int, default=1, metavar="N", help="devices in the first batch (default 1)")
    s.add_argument("--batch", default="25%", metavar="N|P%", help="devices per later batch (default 25%%)")
    s.add_argument("--max-failures", default="0", metavar="N|P%",
                   help="abort and roll back when more devices than this fail (default 0)")
    s.add_argument("--health-timeout", type=float, default=300.0, metavar="S",
                   help="seconds an online device has to run the release healthy before it counts as failed")
    s.add_argument("--offline-deadline", type=float, default=3600.0, metavar="S",
                   help="seconds an offline device counts as pending before it counts as failed")
    s.add_argument("--watch", "-w", action="store_true", help="follow it live until it settles")
    add_api_flags(s)
    s.set_defaults(handler=do_start)

    st = cmds.add_parser("status", help="one rollout in detail, or the recent ones")
    st.add_argument("rollout", metavar="ID", nargs="?", type=int, help="default: the recent rollouts "
                                                                        "(with --watch: the latest)")
    st.add_argument("--app", help="only rollouts of this app")
    st.add_argument("--watch", "-w", action="store_true", help="follow it live until it settles")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    add_api_flags(st)
    st.set_defaults(handler=do_status)

    for name, help_text in (("pause", "start no new batch (devices already updating carry on)"),
                            ("resume", "carry on with the next batch"),
                            ("abort", "stop it and put updated devices back on their previous release")):
        c = cmds.add_parser(name, help=help_text)
        c.add_argument("rollout", metavar="ID", type=int)
        if name == "abort":
            c.add_argument("--no-rollback", action="store_true", help="leave updated devices where they are")
        add_api_flags(c)
        c.set_defaults(handler=do_change, change=name)


def settled(r: dict[str, Any]) -> bool:
    return not r["open"]


def outcome(r: dict[str, Any]) -> int:
    return Exit.OK if r["state"] == "completed" else Exit.FAILED if r["state"] == "aborted" else Exit.OK


def _follow(api: ApiClient, rollout_id: int, args: argparse.Namespace) -> int:
    final = watch(lambda: api.rollout(rollout_id), views.rollout_view, line=views.rollout_line,
                  interval=getattr(args, "interval", 1.0), done=settled, as_json=args.json)
    return outcome(final) if settled(final) else Exit.INTERRUPTED


@api_command
def do_start(args: argparse.Namespace, api: ApiClient) -> int:
    r = api.start_rollout(args.app, args.release, args.to, canary=args.canary, batch=_amount(args.batch),
                          max_failures=_amount(args.max_failures), health_timeout=args.health_timeout,
                          offline_deadline=args.offline_deadline)
    if r["total"] == 0 and not args.json:
        print(f"tinyfleet: warning: {args.to} matches no device yet; devices that come to match it get the "
              "release when the rollout has completed", flush=True)
    if args.watch:
        return _follow(api, r["id"], args)
    return emit(args, r, lambda x: x["id"])


@api_command
def do_status(args: argparse.Namespace, api: ApiClient) -> int:
    rollout_id = args.rollout
    if rollout_id is None:
        recent = api.rollouts(args.app)
        if not args.watch:
            return emit(args, recent, views.rollouts_table)
        if not recent:
            return fail("no rollouts yet", Exit.NOT_FOUND)
        rollout_id = recent[0]["id"]
    if args.watch:
        return _follow(api, rollout_id, args)
    return emit(args, api.rollout(rollout_id), views.rollout_view)


@api_command
def do_change(args: argparse.Namespace, api: ApiClient) -> int:
    if args.change == "abort":
        r = api.abort(args.rollout, rollback=not args.no_rollback)
    else:
        r = getattr(api, args.change)(args.rollout)
    return emit(args, r, views.rollout_view)


def _amount(text: str) -> int | str:
    return int(text) if text.isdigit() else text
