"""API keys: a JSON file of salted scrypt hashes, managed by ``python -m serve keys``; checked per request.

A key reads ``bf_<id>_<secret>``. The id (public) finds the entry; the secret is checked against
``scrypt(secret, salt)``. The file never holds a key, only its id, salt and hash; keys are never logged.
A key that passed scrypt once is remembered by its sha256 until the file changes (revocation takes effect
on the next request after the file's mtime moves), so each request does not pay for scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FORMAT_VERSION = 1
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
KEY_RE = re.compile(r"^bf_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")


class KeyFileError(Exception):
    """The keys file is unreadable or malformed (names the file and the entry)."""


@dataclass
class KeyEntry:
    id: str
    name: str
    salt: str
    hash: str
    created: str
    revoked: str | None = None
    n: int = SCRYPT["n"]
    r: int = SCRYPT["r"]
    p: int = SCRYPT["p"]


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32).hex()


def read_keys(path: Path) -> list[KeyEntry]:
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise KeyFileError(f"{path}: format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
        return [KeyEntry(**e) for e in doc["keys"]]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise KeyFileError(f"{path}: not a brainforge keys file ({type(e).__name__}: {e})") from e


def write_keys(path: Path, keys: list[KeyEntry]) -> None:
    """Atomic write, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "keys": [vars(k) for k in keys]}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_key(path: Path, name: str) -> tuple[str, KeyEntry]:
    """Create a key named ``name``; returns (the key, shown once; its entry)."""
    keys = read_keys(path)
    used = {k.id for k in keys}
    key_id = secrets.token_hex(4)
    while key_id in used:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    entry = KeyEntry(id=key_id, name=name, salt=salt.hex(), hash=_hash(secret, salt, **SCRYPT),
                     created=datetime.now(UTC).isoformat(timespec="seconds"))
    write_keys(path, [*keys, entry])
    return f"bf_{key_id}_{secret}", entry


def revoke_key(path: Path, key_id_or_name: str) -> KeyEntry:
    keys = read_keys(path)
    hits = [k for k in keys if key_id_or_name in (k.id, k.name) and k.revoked is None]
    if len(hits) != 1:
        raise KeyFileError(f"{path}: {len(hits)} active keys match {key_id_or_name!r} (give the key id)")
    hits[0].revoked = datetime.now(UTC).isoformat(timespec="seconds")
    write_keys(path, keys)
    return hits[0]


class KeyStore:
    """Thread-safe verifier over a keys file, reloaded when its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sig: tuple[int, int] | None = None
        self._by_id: dict[str, KeyEntry] = {}
        self._verified: dict[str, str] = {}  # sha256(key) -> key id
        self._reload()

    def _reload(self) -> None:
        st = self.path.stat()
        sig = (st.st_mtime_ns, st.st_size)
        if sig != self._sig:
            self._by_id = {k.id: k for k in read_keys(self.path) if k.revoked is None}
            self._verified = {}
            self._sig = sig

    def verify(self, key: str) -> str | None:
        """The key id if ``key`` is an active key, else None."""
        with self._lock:
            self._reload()
            digest = hashlib.sha256(key.encode()).hexdigest()
            if digest in self._verified:
                return self._verified[digest]
            m = KEY_RE.match(key)
            entry = self._by_id.get(m.group(1)) if m else None
            if entry is None:
                return None
            ok = hmac.compare_digest(_hash(m.group(2), bytes.fromhex(entry.salt), entry.n, entry.r, entry.p), entry.hash)
            if ok:
                self._verified[digest] = entry.id
            return entry.id if ok else None
