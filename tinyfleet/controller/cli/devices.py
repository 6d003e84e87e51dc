"""`tinyfleet devices [--watch]` and `tinyfleet device show | tag | untag | join | leave | pin | unpin | update`."""

from __future__ import annotations

import argparse

from rich.console import RenderableType

from tinyfleet.controller.cli import views
from tinyfleet.controller.cli.common import Exit, fail
from tinyfleet.controller.cli.connect import add_api_flags, api_command, emit
from tinyfleet.controller.cli.live import watch
from tinyfleet.controller.client import ApiClient

ROWS = 40  # a screenful: with thousands of devices, the summary and the ones that need attention


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("devices", help="the fleet at a glance")
    p.add_argument("--selector", "-s", metavar="SEL", help="all | device:ID[,ID...] | group:NAME | tag:KEY=VALUE")
    p.add_argument("--watch", "-w", action="store_true", help="keep the view live (Ctrl-C to stop)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    p.add_argument("--all", "-a", action="store_true",
                   help=f"a row for every device (default: at most {ROWS}, those that need attention first)")
    add_api_flags(p)
    p.set_defaults(handler=do_devices)

    group = sub.add_parser("device", help="one device: show it, tag it, group it, pin it")
    cmds = group.add_subparsers(dest="device_command", metavar="COMMAND", required=True)

    def command(name: str, help: str, handler, *args: tuple[str, str, str | None, str]) -> None:  # type: ignore[no-untyped-def]
        c = cmds.add_parser(name, help=help)
        c.add_argument("device", metavar="ID")
        for dest, metavar, nargs, arg_help in args:
            c.add_argument(dest, metavar=metavar, nargs=nargs, help=arg_help)
        add_api_flags(c)
        c.set_defaults(handler=handler)

    command("show", "everything the controller knows about a device", do_show)
    command("tag", "set tags", do_tag, ("pairs", "KEY=VALUE", "+", "tags to set"))
    command("untag", "remove tags", do_untag, ("keys", "KEY", "+", "tag keys to remove"))
    command("join", "add the device to a group (it gets the group's current release)", do_join,
            ("group", "GROUP", None, "group name"))
    command("leave", "take the device out of a group", do_leave, ("group", "GROUP", None, "group name"))
    command("pin", "hold an app where it is, or move it to RELEASE and hold it there; rollouts skip it "
            "(APP '*' holds the whole device)", do_pin, ("app", "APP", None, "app name, or '*'"),
            ("release", "RELEASE", "?", "release id or version"))
    command("unpin", "let rollouts and groups move the app again", do_unpin, ("app", "APP", None, "app name, or '*'"))
    command("update", "update now what an app's update lock holds back (with --force)", do_update)
    cmds.choices["update"].add_argument("--force", action="store_true", required=True,
                                        help="go ahead whatever the apps' update locks say")
    cmds.choices["update"].add_argument("--app", action="append", default=[], metavar="APP",
                                        help="only this app (repeatable; default: every app of the device)")


@api_command
def do_devices(args: argparse.Namespace, api: ApiClient) -> int:
    def render(devices: list[dict]) -> RenderableType:  # type: ignore[type-arg]
        return views.devices_table(devices, limit=None if args.all else ROWS)

    if args.watch:
        watch(lambda: api.devices(args.selector), render, line=views.fleet_line, interval=args.interval,
              as_json=args.json)
        return Exit.OK
    return emit(args, api.devices(args.selector), render)


def _show(args: argparse.Namespace, device: dict) -> int:  # type: ignore[type-arg]
    return emit(args, device, views.device_view)


@api_command
def do_show(args: argparse.Namespace, api: ApiClient) -> int:
    return _show(args, api.device(args.device))


@api_command
def do_tag(args: argparse.Namespace, api: ApiClient) -> int:
    pairs = []
    for item in args.pairs:
        key, eq, value = item.partition("=")
        if not eq:
            return fail(f"tag {item!r} is not KEY=VALUE", Exit.USAGE)
        pairs.append((key, value))
    device = None
    for key, value in pairs:
        device = api.tag(args.device, key, value)
    return _show(args, device)  # type: ignore[arg-type]


@api_command
def do_untag(args: argparse.Namespace, api: ApiClient) -> int:
    device = None
    for key in args.keys:
        device = api.untag(args.device, key)
    return _show(args, device)  # type: ignore[arg-type]


@api_command
def do_join(args: argparse.Namespace, api: ApiClient) -> int:
    return _show(args, api.join(args.device, args.group))


@api_command
def do_leave(args: argparse.Namespace, api: ApiClient) -> int:
    return _show(args, api.leave(args.device, args.group))


@api_command
def do_pin(args: argparse.Namespace, api: ApiClient) -> int:
    return _show(args, api.pin(args.device, args.app, args.release))


@api_command
def do_update(args: argparse.Namespace, api: ApiClient) -> int:
    done = api.force_update(args.device, args.app)
    return emit(args, done, lambda d: f"{d['device']}: desired state {d['generation']} forces "
                                      f"{', '.join(d['forced']) or 'no app'} past their update locks")


@api_command
def do_unpin(args: argparse.Namespace, api: ApiClient) -> int:
    return _show(args, api.unpin(args.device, args.app))
