"""``python -m serve``: run the server, manage API keys, or run the demo client.

    python -m serve --registry REGISTRY [--host 127.0.0.1 --port 8000 --api-keys keys.json --max-batch 32 ...]
    python -m serve keys add --file keys.json --name NAME     # prints the new key once
    python -m serve keys revoke --file keys.json KEY_ID
    python -m serve keys list --file keys.json
    python -m serve demo --registry REGISTRY RECORDING         # start, send, print, stop

Every server flag also reads from the environment: ``BRAINFORGE_REGISTRY``, ``BRAINFORGE_PORT``, ... (flags win).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# flag -> Settings field; type; help
SERVER_FLAGS = {
    "--registry": (str, "registry folder of model packages (NAME/VERSION/) [BRAINFORGE_REGISTRY]"),
    "--host": (str, "bind address (default 127.0.0.1)"),
    "--port": (int, "port (default 8000; 0 picks a free one)"),
    "--api-keys": (str, "keys file; when given every non-health route needs 'Authorization: Bearer KEY'"),
    "--max-batch": (int, "most windows per forward pass (default 32; 1 = one request per forward pass)"),
    "--max-delay-ms": (float, "longest wait for a batch to fill, ms (default 10)"),
    "--max-queue": (int, "requests admitted per model before 429 (default 64)"),
    "--max-body-mb": (float, "largest request body, MB (default 200; 413 beyond)"),
    "--max-duration-s": (float, "longest recording, s (default 3600; 422 beyond)"),
    "--max-channels": (int, "most channels (default 512; 422 beyond)"),
    "--min-sfreq": (float, "lowest sampling rate, Hz (default 64)"),
    "--max-sfreq": (float, "highest sampling rate, Hz (default 20000)"),
    "--preprocess-threads": (int, "threads reading and preprocessing inputs (default 2)"),
    "--torch-threads": (int, "torch intra-op threads (default: half the CPU cores, at least 1)"),
    "--upload-dir": (str, "parent folder of per-request upload folders (default: system temp)"),
    "--graceful-timeout-s": (float, "how long shutdown waits for in-flight requests (default 30)"),
    "--log-level": (str, "INFO, DEBUG, WARNING ..."),
}


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve", description="brainforge model server (Open Inference Protocol v2 "
                                "+ recording upload). Subcommands: `keys add|revoke|list`, `demo`.")
    for flag, (typ, help_) in SERVER_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--no-preload", dest="preload", action="store_false", default=None,
                   help="load models on first use instead of at startup")
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

    p = argparse.ArgumentParser(prog="python -m serve keys", description="manage API keys (salted scrypt hashes)")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keys":
        return _keys(argv[1:])
    if argv and argv[0] == "demo":
        from serve.demo import main as demo_main

        return demo_main(argv[1:])
    args = _server_parser().parse_args(argv)
    from serve.server import run_server

    run_server(_settings_from(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
