"""``llm-router keys create|list|show|update|revoke``: client keys, through a running router's
admin API (``server.admin_key``, given as ``--admin-key`` or ``LLM_ROUTER_ADMIN_KEY``).

``create`` prints the new secret on standard output alone (it is shown this once: store it),
its id and settings on standard error; ``--json`` prints the admin API's answer instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .failure import EXIT_FAILED, CommandFailed
from .header_args import header_text, is_header_text
from .runs import DEFAULT_SERVER

__all__ = ["add_command", "run_command"]

_ADMIN_ENV = "LLM_ROUTER_ADMIN_KEY"


def add_command(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke client keys "
                               "(through a running router's admin API)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key; prints its secret (shown once)")
    create.add_argument("name")
    _settings_options(create)
    listing = actions.add_parser("list", help="every key, with what it spent this period")
    show = actions.add_parser("show", help="one key")
    show.add_argument("key_id", metavar="KEY_ID")
    update = actions.add_parser("update", help="change a key's limits")
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--name", default=None)
    _settings_options(update)
    revoke = actions.add_parser("revoke", help="revoke a key (every router process, at once)")
    revoke.add_argument("key_id", metavar="KEY_ID")
    for parser in (create, listing, show, update, revoke):
        parser.add_argument("--server", default=DEFAULT_SERVER,
                            help=f"the router's URL (default {DEFAULT_SERVER})")
        parser.add_argument("--admin-key", default=None, type=header_text(),
                            help=f"server.admin_key (default: ${_ADMIN_ENV})")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def _settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None,
                        help="comma-separated models the key may ask for (auto: routed)")
    parser.add_argument("--max-tier", type=int, default=None)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    parser.add_argument("--budget", type=float, default=None, help="USD per period")
    parser.add_argument("--period", choices=["day", "week", "month", "total"], default=None)
    parser.add_argument("--expires", default=None, help="ISO time, e.g. 2027-01-01T00:00:00Z")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    named = {"models": args.models.split(",") if args.models is not None else None,
             "max_tier": args.max_tier, "rpm": args.rpm, "tpm": args.tpm,
             "budget_usd": args.budget, "budget_period": args.period,
             "expires_at": args.expires}
    if getattr(args, "name", None) is not None:
        named["name"] = args.name
    return {key: value for key, value in named.items() if value is not None}


def run_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except CommandFailed as exc:
        print(f"llm-router: {exc.message}", file=sys.stderr)
        return exc.code


def _run(args: argparse.Namespace) -> int:
    from .remote import json_of, open_router

    admin_key = args.admin_key or os.environ.get(_ADMIN_ENV)
    if not admin_key:
        raise CommandFailed(f"the admin API needs server.admin_key: pass --admin-key or set "
                            f"{_ADMIN_ENV}")
    if not is_header_text(admin_key):
        raise CommandFailed("the admin key must be printable ASCII characters (it is sent in "
                            "the Authorization header)")
    action = args.keys_command
    path = "/v1/admin/keys"
    if action in ("show", "update", "revoke"):
        path += "/" + quote(args.key_id, safe="")
    method, body = {"create": ("POST", None), "list": ("GET", None), "show": ("GET", None),
                    "update": ("PATCH", None), "revoke": ("DELETE", None)}[action]
    if action == "create":
        body = {"name": args.name, **_settings(args)}
    elif action == "update":
        body = _settings(args)
        if not body:
            raise CommandFailed("nothing to change: give at least one option")
    with open_router(args.server, admin_key) as router:
        answer = json_of(router.call(method, path, body=body))
    if args.json:
        print(json.dumps(answer, indent=2))
    elif action == "create":
        print(answer["key"])
        print(f"created {answer['id']} ({answer['name']}); the key above is shown only now",
              file=sys.stderr)
    elif action == "list":
        keys = answer.get("data", [])
        print(keys_table(keys) if keys else "no keys")
    else:
        print(describe_key(answer))
    return 0 if not (action == "revoke" and answer.get("revoked_at") is None) else EXIT_FAILED


def keys_table(keys: list[Mapping[str, Any]]) -> str:
    rows = [("ID", "NAME", "PREFIX", "STATE", "SPENT", "BUDGET", "RPM", "MAX TIER")]
    for key in keys:
        usage = key.get("usage") or {}
        budget = key.get("budget_usd")
        rows.append((
            key["id"], key["name"], key["prefix"] + "…",
            "revoked" if key.get("revoked_at") else "active",
            f"${usage.get('spent_usd', 0):.4f}",
            "-" if budget is None else f"${budget:g}/{key['budget_period']}",
            "-" if key.get("rpm") is None else str(key["rpm"]),
            "-" if key.get("max_tier") is None else str(key["max_tier"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def describe_key(key: Mapping[str, Any]) -> str:
    usage = key.get("usage") or {}
    state = "revoked at " + key["revoked_at"] if key.get("revoked_at") else "active"
    lines = [f"{key['id']}  {key['name']}  ({key['prefix']}…)",
             f"  state    {state}"]
    for field in ("models", "max_tier", "rpm", "tpm", "budget_usd", "budget_period",
                  "expires_at"):
        if key.get(field) is not None:
            lines.append(f"  {field:<13}{key[field]}")
    if usage:
        lines.append(f"  used     ${usage.get('spent_usd', 0):.6f}, {usage.get('requests', 0)}"
                     f" requests, {usage.get('tokens', 0)} tokens in {usage.get('period')}")
    return "\n".join(lines)
