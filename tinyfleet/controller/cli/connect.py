"""How the operator commands find the controller: URL and token from flags, the environment or a
config file, in that order, and how API errors become exit codes.

    --url URL            TINYFLEET_URL            url = "..."          default http://127.0.0.1:8080
    --token-file PATH    TINYFLEET_TOKEN(_FILE)   token_file = "..."   default /var/lib/tinyfleet/api-token

The config file is $TINYFLEET_CONFIG, else $XDG_CONFIG_HOME/tinyfleet/cli.toml (~/.config/...). There is
no --token flag on purpose: a token on a command line shows in `ps` and in shell history.
"""

from __future__ import annotations

import argparse
import functools
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyfleet.controller.cli.common import Exit, console, fail, print_json
from tinyfleet.controller.client import ApiClient, ApiError, ControllerUnreachable

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = Path("/var/lib/tinyfleet/api-token")


class ConfigError(Exception):
    pass


def add_api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"controller API (env TINYFLEET_URL; default {DEFAULT_URL})")
    parser.add_argument("--token-file", type=Path, help="file holding the API token (env TINYFLEET_TOKEN_FILE, "
                                                         "or the token itself in TINYFLEET_TOKEN)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def config_path() -> Path:
    if os.environ.get("TINYFLEET_CONFIG"):
        return Path(os.environ["TINYFLEET_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tinyfleet" / "cli.toml"


def _config() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def client_from(args: argparse.Namespace) -> ApiClient:
    cfg = _config()
    url = args.url or os.environ.get("TINYFLEET_URL") or cfg.get("url") or DEFAULT_URL
    token = None
    token_file = args.token_file or (Path(os.environ["TINYFLEET_TOKEN_FILE"])
                                     if os.environ.get("TINYFLEET_TOKEN_FILE") else None)
    if token_file is None:
        token = os.environ.get("TINYFLEET_TOKEN") or cfg.get("token")
        if token is None:
            token_file = Path(cfg["token_file"]) if cfg.get("token_file") else DEFAULT_TOKEN_FILE
    if token is None:
        try:
            token = token_file.read_text().strip()  # type: ignore[union-attr]
        except OSError as exc:
            raise ConfigError(f"no API token: cannot read {token_file} ({exc.strerror}); pass --token-file, set "
                              f"TINYFLEET_TOKEN_FILE, or put token_file in {config_path()}") from exc
    return ApiClient(str(url), str(token))


def exit_for(exc: ApiError) -> Exit:
    if isinstance(exc, ControllerUnreachable):
        return Exit.UNAVAILABLE
    by_code = {"over_budget": Exit.OVER_BUDGET, "platform_missing": Exit.PLATFORM_MISSING,
               "image_not_found": Exit.NOT_FOUND, "registry_unavailable": Exit.UNAVAILABLE}
    if exc.code in by_code:
        return by_code[exc.code]
    return {400: Exit.USAGE, 413: Exit.USAGE, 401: Exit.UNAUTHORIZED, 404: Exit.NOT_FOUND,
            409: Exit.REFUSED, 422: Exit.REFUSED, 502: Exit.REFUSED, 503: Exit.UNAVAILABLE}.get(exc.status, Exit.FAILED)


def api_command(handler: Callable[[argparse.Namespace, ApiClient], int]) -> Callable[[argparse.Namespace], int]:
    """Give a handler its client, and turn API and config errors into one line and an exit code."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, client_from(args))
        except ConfigError as exc:
            return fail(str(exc), Exit.USAGE)
        except ApiError as exc:
            return fail(exc.message, exit_for(exc))

    return run


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], Any]) -> int:
    """Show an API answer: as is with --json, else `render(data)` (a rich renderable or a line)."""
    if args.json:
        print_json(data)
    else:
        shown = render(data)
        if isinstance(shown, str | int):
            print(shown)
        else:
            console().print(shown)
    return Exit.OK
