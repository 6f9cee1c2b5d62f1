"""Admission before reading: byte budgets shared by all requests, and body reading under a per-kind limit.

Order for a request with a body: key check, model lookup (404), the model's queue slot (429), then the bytes:
the body's size (Content-Length, or streamed bytes) is reserved against a server-wide `Budget` before it is
read (429 with ``Retry-After`` when the budget is spent), so memory and upload disk space stay bounded however
many large requests arrive at once.

- JSON bodies are parsed into Python objects: parsing costs several times the body's size, so a JSON body
  reserves ``JSON_MEMORY_FACTOR`` times its size in the memory budget (``--max-inflight-mb``) until it has been
  turned into arrays; its size is limited by ``--max-json-mb`` (413), apart from the upload limit.
- Uploads are spooled to disk twice (the multipart spool and the per-request copy) and zips are unpacked:
  they reserve disk space in the upload budget (``--max-upload-space-mb``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from serve.errors import PayloadTooLarge, ServerBusy

# Parsing a JSON float array into Python floats (pydantic list[Any]) and then into float32/float64 arrays and
# preprocessing them peaked at about 9x the body size (measured by bench/serve_hardening.py: 857 MB above the
# server's start-up RSS for one 94 MB body).
JSON_MEMORY_FACTOR = 10


class Budget:
    """A count of bytes reserved by requests in flight, never above ``total``; thread-safe."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total = name, int(total)
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def try_reserve(self, n: int) -> bool:
        with self._lock:
            if n > 0 and self.used + n > self.total:
                return False
            self.used += max(0, n)
            self.peak = max(self.peak, self.used)
            return True

    def reserve(self, n: int, what: str) -> None:
        """Reserve ``n`` bytes or raise `ServerBusy` (429): a request bigger than the whole budget can never
        fit, which is a 413."""
        if n > self.total:
            raise PayloadTooLarge(f"{what} needs {n / 2**20:.1f} MB of {self.name}, more than the server's whole "
                                  f"budget of {self.total / 2**20:g} MB")
        if not self.try_reserve(n):
            raise ServerBusy(f"the server's {self.name} is in use by other requests ({self.used / 2**20:.0f} of "
                             f"{self.total / 2**20:g} MB); retry later", retry_after_s=2)

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - max(0, n))


class Hold:
    """Bytes one request holds in a `Budget`; grows with `add`, all released on `close`."""

    def __init__(self, budget: Budget) -> None:
        self.budget, self.bytes = budget, 0

    def add(self, n: int, what: str) -> None:
        self.budget.reserve(n, what)
        self.bytes += n

    def close(self) -> None:
        self.budget.release(self.bytes)
        self.bytes = 0


@contextmanager
def hold(budget: Budget):
    h = Hold(budget)
    try:
        yield h
    finally:
        h.close()


def content_length(headers) -> int | None:
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def check_length(headers, limit: int, what: str) -> int | None:
    """413 from Content-Length alone, before any body byte is read; returns the length (None when chunked)."""
    length = content_length(headers)
    if length is not None and length > limit:
        raise PayloadTooLarge(f"{what} of {length} bytes exceeds the {limit / 2**20:g} MB limit")
    return length


async def read_body(request, limit: int, budget_hold: Hold, factor: int, what: str) -> bytearray:
    """The body, at most ``limit`` bytes (413 beyond), reserving ``factor`` bytes per body byte in ``budget_hold``
    before reading them (all at once for a Content-Length, else chunk by chunk)."""
    length = check_length(request.headers, limit, what)
    if length is not None:
        budget_hold.add(length * factor, what)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(f"{what} exceeds the {limit / 2**20:g} MB limit (streamed {len(body) + len(chunk)} bytes)")
        if length is None or len(body) + len(chunk) > length:
            budget_hold.add(len(chunk) * factor, what)
        body += chunk
    return body
