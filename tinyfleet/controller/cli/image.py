"""`tinyfleet image pack | inspect`: build scratch images from static binaries, and check what an
image costs each platform before anything is deployed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyfleet.controller.cli.common import (
    Exit,
    add_registry_flags,
    console,
    exit_for,
    fail,
    human_bytes,
    print_json,
    registry_client,
)
from tinyfleet.oci import errors as oe
from tinyfleet.oci import pack, sizes
from tinyfleet.oci.platform import Platform
from tinyfleet.oci.reference import ImageReference


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("image", help="pack and inspect multi-arch scratch images")
    cmds = group.add_subparsers(dest="image_command", metavar="COMMAND", required=True)

    p = cmds.add_parser("pack", help="turn static binaries into one multi-arch scratch image and push it")
    p.add_argument("ref", metavar="REF", help="where to push, e.g. 127.0.0.1:5000/hello:1.0")
    p.add_argument("--binary", action="append", required=True, metavar="PLATFORM=PATH",
                   help="a static binary for one platform, e.g. linux/arm/v6=./hello-armv6 (repeat)")
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST", help="extra file (repeat)")
    p.add_argument("--binary-path", default="/app", help="where the binary goes in the image (default /app)")
    p.add_argument("--entrypoint", nargs="+", help="entrypoint argv (default: the binary)")
    p.add_argument("--cmd", nargs="+", default=[], help="default arguments")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--healthcheck", metavar="CMD", help='health command run in the container, e.g. "/app health"')
    p.add_argument("--health-interval", type=float, default=3.0, metavar="SECONDS")
    p.add_argument("--health-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long one health check may take before it counts as failed (default 10)")
    p.add_argument("--user", default="65534:65534", help="uid:gid to run as (default nobody)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_registry_flags(p)
    p.set_defaults(handler=do_pack)

    i = cmds.add_parser("inspect", help="per-platform digests and compressed sizes, from manifests only")
    i.add_argument("ref", metavar="REF")
    i.add_argument("--platform", action="append", default=[], help="require this platform (repeat)")
    i.add_argument("--max-bytes", type=int, help="fail when a (required) platform's compressed size exceeds this")
    i.add_argument("--json", action="store_true")
    add_registry_flags(i)
    i.set_defaults(handler=do_inspect)


def _pairs(values: list[str], sep: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        key, found, rest = value.partition(sep)
        if not found or not key:
            raise ValueError(f"{flag} {value!r} is not {'PLATFORM=PATH' if flag == '--binary' else 'K' + sep + 'V'}")
        out.append((key, rest))
    return out


def do_pack(args: argparse.Namespace) -> int:
    try:
        ref = ImageReference.parse(args.ref)
        binaries = {}
        for name, path in _pairs(args.binary, "=", "--binary"):
            platform = Platform.parse(name)
            if platform in binaries:
                return fail(f"--binary given twice for {platform}", Exit.USAGE)
            binaries[platform] = Path(path)
        adds = tuple((Path(src), dest) for src, dest in _pairs(args.add, ":", "--add"))
        spec = pack.PackSpec(
            binaries=binaries, binary_path=args.binary_path, adds=adds,
            entrypoint=tuple(args.entrypoint) if args.entrypoint else None, cmd=tuple(args.cmd),
            env=tuple(_pairs(args.env, "=", "--env")), labels=tuple(sorted(_pairs(args.label, "=", "--label"))),
            healthcheck=args.healthcheck, health_interval_s=args.health_interval,
            health_timeout_s=args.health_timeout, user=args.user)
        packed = pack.build(spec)
        digest = pack.push(registry_client(args, ref.registry), ref, packed)
    except ValueError as exc:
        return fail(str(exc), Exit.USAGE)
    except oe.OciError as exc:
        return fail(str(exc), exit_for(exc))
    if args.json:
        print_json({"reference": ref.pinned(digest), "digest": digest,
                    "platforms": {str(p): {"compressed_size": s} for p, s in packed.sizes.items()}})
    else:
        print(digest)
    return Exit.OK


def do_inspect(args: argparse.Namespace) -> int:
    try:
        ref = ImageReference.parse(args.ref)
        wanted = [Platform.parse(p) for p in args.platform]
        resolved = sizes.resolve(registry_client(args, ref.registry), ref)
        chosen = [resolved.for_platform(p) for p in wanted] if wanted else list(resolved.platforms)
    except ValueError as exc:
        return fail(str(exc), Exit.USAGE)
    except oe.OciError as exc:
        return fail(str(exc), exit_for(exc))
    over = [p for p in chosen if args.max_bytes is not None and p.compressed_size > args.max_bytes]
    if args.json:
        print_json({"reference": str(resolved.reference), "digest": resolved.digest,
                    "media_type": resolved.media_type, "max_bytes": args.max_bytes,
                    "platforms": [{"platform": str(p.platform), "digest": p.digest,
                                   "compressed_size": p.compressed_size, "layers": p.layers,
                                   "over_budget": p in over} for p in chosen]})
    else:
        from rich.table import Table
        table = Table(title=f"{resolved.reference.name}@{resolved.digest}", title_justify="left")
        for col in ("platform", "manifest digest", "compressed", "layers"):
            table.add_column(col, justify="right" if col in ("compressed", "layers") else "left")
        for p in chosen:
            size = human_bytes(p.compressed_size)
            table.add_row(str(p.platform), p.digest, f"[red]{size}[/red]" if p in over else size, str(p.layers))
        console().print(table)
    if over:
        names = ", ".join(f"{p.platform} ({p.compressed_size} bytes)" for p in over)
        print(f"tinyfleet: over budget of {args.max_bytes} bytes: {names}", file=sys.stderr)
        return Exit.OVER_BUDGET
    return Exit.OK
