"""`tinyfleet signing-key show|rotate`: the key every desired state is signed with.

`show` prints the public key (what `tinyfleet provision --controller-key` and the agent's
`controller_key` take) and the endorsement chain; `rotate` makes a new key endorsed by the current one
(boards move to it with the next document they accept, no re-flashing) and destroys the old private key.
Restart the controller after a rotation.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tinyfleet.agent import logs
from tinyfleet.controller import signing
from tinyfleet.controller.cli.common import Exit, fail, print_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("signing-key", help="show or rotate the key desired states are signed with")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, handler, text in (("show", do_show, "print the public key boards trust, and its endorsements"),
                                ("rotate", do_rotate, "new key endorsed by the current one; then restart")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--db", type=Path, metavar="PATH",
                       default=Path(os.environ.get("TINYFLEET_DB", "/var/lib/tinyfleet/controller.db")),
                       help="the controller's database: the key lives beside it (env TINYFLEET_DB)")
        v.add_argument("--json", action="store_true", help="machine-readable output")
        v.set_defaults(handler=handler)


def _show(signer: signing.Signer, as_json: bool) -> int:
    if as_json:
        print_json({"public_key": str(signer.public), "key_id": signer.public.key_id,
                   "endorsements": [e.to_dict() for e in signer.chain]})
        return Exit.OK
    print(signer.public)
    for e in signer.chain:
        print(f"  endorsed by {e.by}")
    return Exit.OK


def _run(args: argparse.Namespace, action) -> int:  # type: ignore[no-untyped-def]
    logs.configure("warning" if args.json else "info")  # logs to stderr; stdout is the key (or its JSON)
    if not (args.db.parent / signing.KEY_FILE).exists():
        return fail(f"no signing key beside {args.db}: the controller creates it on its first start", Exit.NOT_FOUND)
    try:
        return _show(action(args.db.parent), args.json)
    except (OSError, ValueError) as exc:
        return fail(str(exc))


def do_show(args: argparse.Namespace) -> int:
    return _run(args, signing.load_or_create)


def do_rotate(args: argparse.Namespace) -> int:
    return _run(args, signing.rotate)
