"""API keys: a JSON file of keyed hashes, managed by ``python -m serve keys``; checked per request.

A key reads ``bf_<id>_<secret>`` with a 256-bit random secret. The id (public) finds the entry; the secret is
checked as ``HMAC-SHA-256(server secret, salt + secret)`` with a constant-time compare. The server secret is
drawn once per keys file (``hmac_secret``, the file is mode 0600), so a hash from one file is useless against
another. A fast keyed hash is enough because the secrets are random (no dictionary to try), and it keeps a flood
of wrong keys from starving real users (scrypt under a lock did: a valid key's p50 went from 3.6 ms to 1 s under
16 wrong-secret clients). Entries of format 1 files (scrypt) are still verified, off the event loop, and
`FailureLimiter` answers 429 to a client whose failed attempts exceed its budget. The file never holds a key;
keys are never logged. Revocation takes effect on the next request after the file's mtime or size moves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
    kdf: str = "hmac-sha256"  # or "scrypt" (entries of format 1 files)
    n: int = SCRYPT["n"]
    r: int = SCRYPT["r"]
    p: int = SCRYPT["p"]

    def check(self, secret: str, server_secret: bytes) -> bool:
        """Constant-time comparison of the secret's keyed hash with the stored one."""
        if self.kdf == "scrypt":
            digest = _scrypt(secret, bytes.fromhex(self.salt), self.n, self.r, self.p)
        else:
            digest = _hmac(secret, bytes.fromhex(self.salt), server_secret)
        return hmac.compare_digest(digest, self.hash)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32).hex()


def _hmac(secret: str, salt: bytes, server_secret: bytes) -> str:
    return hmac.new(server_secret, salt + secret.encode(), hashlib.sha256).hexdigest()


def _read_doc(path: Path) -> tuple[bytes, list[KeyEntry]]:
    """(server secret, entries); a format 1 file has no secret yet (b"")."""
    if not path.exists():
        return b"", []
    try:
        doc = json.loads(path.read_text())
        version = doc.get("format_version")
        if version not in READABLE_VERSIONS:
            raise KeyFileError(f"{path}: format_version {version!r}, expected one of {READABLE_VERSIONS}")
        entries = [KeyEntry(**({"kdf": "scrypt"} if version == 1 else {}) | e) for e in doc["keys"]]
        secret = bytes.fromhex(doc["hmac_secret"]) if version >= 2 else b""
        if version >= 2 and len(secret) < 32:
            raise KeyFileError(f"{path}: hmac_secret is shorter than 32 bytes")
        return secret, entries
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise KeyFileError(f"{path}: not a brainforge keys file ({type(e).__name__}: {e})") from e


def read_keys(path: Path) -> list[KeyEntry]:
    return _read_doc(path)[1]


def write_keys(path: Path, keys: list[KeyEntry], server_secret: bytes | None = None) -> None:
    """Atomic write, mode 0600 (format 2; the server secret is kept, or drawn when the file has none)."""
    server_secret = server_secret or _read_doc(path)[0] or secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "hmac_secret": server_secret.hex(),
                   "keys": [vars(k) for k in keys]}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_key(path: Path, name: str) -> tuple[str, KeyEntry]:
    """Create a key named ``name``; returns (the key, shown once; its entry)."""
    server_secret, keys = _read_doc(path)
    server_secret = server_secret or secrets.token_bytes(32)
    used = {k.id for k in keys}
    key_id = secrets.token_hex(4)
    while key_id in used:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    entry = KeyEntry(id=key_id, name=name, salt=salt.hex(), hash=_hmac(secret, salt, server_secret),
                     created=datetime.now(UTC).isoformat(timespec="seconds"))
    write_keys(path, [*keys, entry], server_secret)
    return f"bf_{key_id}_{secret}", entry


def revoke_key(path: Path, key_id_or_name: str) -> KeyEntry:
    server_secret, keys = _read_doc(path)
    hits = [k for k in keys if key_id_or_name in (k.id, k.name) and k.revoked is None]
    if len(hits) != 1:
        raise KeyFileError(f"{path}: {len(hits)} active keys match {key_id_or_name!r} (give the key id)")
    hits[0].revoked = datetime.now(UTC).isoformat(timespec="seconds")
    write_keys(path, keys, server_secret)
    return hits[0]


class KeyStore:
    """Verifier over a keys file, reloaded when its mtime or size changes (checked at most every ``recheck_s``).

    `verify` takes microseconds for format 2 entries and holds no lock while hashing; `needs_thread` says whether
    a key would be checked with scrypt (a format 1 entry), which the server then runs off the event loop."""

    def __init__(self, path: Path, recheck_s: float = 0.0) -> None:
        self.path, self.recheck_s = path, recheck_s
        self._lock = threading.Lock()
        self._sig: tuple[int, int] | None = None
        self._checked = 0.0
        self._secret = b""
        self._by_id: dict[str, KeyEntry] = {}
        self._verified: OrderedDict[str, str] = OrderedDict()  # sha256(key) -> key id, for scrypt entries only
        self._reload()

    def _reload(self) -> None:
        now = time.monotonic()
        if self._sig is not None and now - self._checked < self.recheck_s:
            return
        with self._lock:
            st = self.path.stat()
            sig = (st.st_mtime_ns, st.st_size)
            if sig != self._sig:
                self._secret, entries = _read_doc(self.path)
                self._by_id = {k.id: k for k in entries if k.revoked is None}
                self._verified = OrderedDict()
                self._sig = sig
            self._checked = now

    def _entry(self, key: str) -> tuple[KeyEntry | None, str]:
        m = KEY_RE.match(key)
        return (self._by_id.get(m.group(1)), m.group(2)) if m else (None, "")

    def needs_thread(self, key: str) -> bool:
        self._reload()
        entry, _ = self._entry(key)
        return entry is not None and entry.kdf == "scrypt"

    def verify(self, key: str) -> str | None:
        """The key id if ``key`` is an active key, else None."""
        self._reload()
        entry, secret = self._entry(key)
        if entry is None:
            return None
        if entry.kdf != "scrypt":
            return entry.id if entry.check(secret, self._secret) else None
        digest = hashlib.sha256(key.encode()).hexdigest()
        if self._verified.get(digest) == entry.id:
            return entry.id
        if not entry.check(secret, self._secret):
            return None
        self._verified[digest] = entry.id
        while len(self._verified) > 1024:
            self._verified.popitem(last=False)
        return entry.id


class FailureLimiter:
    """Failed key checks per client (address): more than ``max_failures`` within ``window_s`` seconds and the
    client's further failures are answered 429 with ``Retry-After`` (after a delay: the server tarpits them) until
    its oldest failure ages out. A valid key is never refused (its check is cheap), so a flood from a shared address
    does not lock out real users."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, max_clients: int = 10000) -> None:
        self.max_failures, self.window_s, self.max_clients = max_failures, window_s, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def fail(self, client: str) -> float | None:
        """Record a failure; seconds to wait when ``client`` is over its budget, else None."""
        now = time.monotonic()
        times = self._failures.pop(client, None) or deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        times.append(now)
        while len(times) > self.max_failures + 1:
            times.popleft()
        self._failures[client] = times
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        if len(times) > self.max_failures:
            return max(1.0, self.window_s - (now - times[0]))
        return None
