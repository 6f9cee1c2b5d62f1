"""``python -m serve``: run the server, manage API keys, or run the demo client.

    python -m serve --registry REGISTRY [--host 127.0.0.1 --port 8000 --api-keys keys.json --max-batch 32 ...]
    python -m serve keys add --file keys.json --name NAME     # prints the new key once
    python -m serve keys revoke --file keys.json KEY_ID
    python -m serve keys list --file keys.json
    python -m serve demo --registry REGISTRY RECORDING         # start, send, print, stop
    python -m serve health                                     # exit 0 when 127.0.0.1:$BRAINFORGE_PORT is ready

Every server flag also reads from the environment: ``BRAINFORGE_REGISTRY``, ``BRAINFORGE_PORT``, ... (flags win).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _flag_type(annotation):
    """argparse type of a Settings field: the non-None member of ``X | None``; Path fields are read as str."""
    import types
    import typing
    from pathlib import Path as _Path

    args = [a for a in typing.get_args(annotation) if a is not type(None)] if isinstance(
        annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else [annotation]
    typ = args[0] if args else str
    return str if typ is _Path else typ


def _server_parser() -> argparse.ArgumentParser:
    """One flag per `Settings` field, generated from the model (name, type, description, default, env var),
    so flags, environment variables and defaults cannot drift apart."""
    from pydantic_core import PydanticUndefined

    from serve.settings import Settings

    p = argparse.ArgumentParser(prog="python -m serve", description="brainforge model server (Open Inference Protocol v2 "
                                "+ recording upload). Subcommands: `keys add|revoke|list`, `demo`, `health`. Every flag "
                                "also reads from its BRAINFORGE_* environment variable (the flag wins).")
    for name, field in Settings.model_fields.items():
        flag, env = "--" + name.replace("_", "-"), "BRAINFORGE_" + name.upper()
        required = field.default is PydanticUndefined
        default = "required unless set in the environment" if required else f"default {field.default}"
        help_ = f"{field.description or name} [{default}; {env}]"
        typ = _flag_type(field.annotation)
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:  # a required field is a required flag unless its environment variable is set
            p.add_argument(flag, dest=name, type=typ, default=None, metavar=name.upper(), help=help_,
                           required=required and env not in os.environ)
    return p


def _settings_from(args: argparse.Namespace, **extra):
    from pydantic import ValidationError

    from serve.settings import Settings

    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return Settings(**given, **extra)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        raise SystemExit(f"error: {msgs}") from None


def _keys(argv: list[str]) -> int:
    from serve.auth import KeyFileError, add_key, read_keys, revoke_key

    p = argparse.ArgumentParser(prog="python -m serve keys", description="manage API keys (HMAC-SHA-256 of random secrets)")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="create a key and print it once")
    a.add_argument("--file", required=True, type=Path)
    a.add_argument("--name", default="default", help="a label for the key (who uses it)")
    r = sub.add_parser("revoke", help="revoke a key by id (or unique name)")
    r.add_argument("--file", required=True, type=Path)
    r.add_argument("key", help="key id (the 8 hex digits after 'bf_') or name")
    s = sub.add_parser("list", help="list keys (ids, names, dates; never the keys)")
    s.add_argument("--file", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "add":
            key, entry = add_key(args.file, args.name)
            print(key)
            print(f"added key {entry.id} ({entry.name}) to {args.file}; it is shown only now", file=sys.stderr)
        elif args.cmd == "revoke":
            entry = revoke_key(args.file, args.key)
            print(f"revoked key {entry.id} ({entry.name})")
        else:
            for k in read_keys(args.file):
                print(f"{k.id}  {k.name:<20}  created {k.created}  {'revoked ' + k.revoked if k.revoked else 'active'}")
    except KeyFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _health(argv: list[str]) -> int:
    """The container health check: GET /v2/health/ready on this machine, at the port the server reads
    (``--port``, else BRAINFORGE_PORT, else 8000); exit 0 when ready."""
    import urllib.error
    import urllib.request

    p = argparse.ArgumentParser(prog="python -m serve health", description=_health.__doc__)
    p.add_argument("--port", type=int, default=int(os.environ.get("BRAINFORGE_PORT") or 8000))
    p.add_argument("--timeout", type=float, default=4.0)
    args = p.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            ok = r.status == 200
    except (urllib.error.URLError, OSError) as e:
        print(f"not ready: {url}: {e}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keys":
        return _keys(argv[1:])
    if argv and argv[0] == "health":
        return _health(argv[1:])
    if argv and argv[0] == "demo":
        from serve.demo import main as demo_main

        return demo_main(argv[1:])
    args = _server_parser().parse_args(argv)
    from serve.server import run_server

    run_server(_settings_from(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
