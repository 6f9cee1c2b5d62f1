"""Request limits: body size (413) as ASGI middleware; recording duration, channels, sampling rate (422)."""

from __future__ import annotations

import json

from serve.errors import LimitExceeded
from serve.settings import Settings


class _TooLarge(Exception):
    pass


def _json_response(status: int, message: str) -> tuple[dict, dict]:
    body = json.dumps({"error": message}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """413 when ``Content-Length`` says the body is too big, or when the streamed bytes (chunked uploads) exceed
    the limit; in the second case the inner app's own answer (whatever it made of the cut stream) is dropped."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit_mb = self.max_bytes / 1024 / 1024
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                for m in _json_response(413, f"request body of {int(length)} bytes exceeds the {limit_mb:g} MB limit"):
                    await send(m)
                return
        received = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            for m in _json_response(413, f"request body exceeds the {limit_mb:g} MB limit (streamed {received} bytes)"):
                await send(m)


def check_recording(settings: Settings, n_channels: int, sfreq: float, duration_s: float, what: str) -> None:
    """Raise `LimitExceeded` (422) naming ``what`` when an input is outside the server's limits."""
    if n_channels > settings.max_channels:
        raise LimitExceeded(f"{what}: {n_channels} channels exceed the limit of {settings.max_channels}")
    if not settings.min_sfreq <= sfreq <= settings.max_sfreq:
        raise LimitExceeded(
            f"{what}: sampling rate {sfreq:g} Hz is outside the accepted range "
            f"[{settings.min_sfreq:g}, {settings.max_sfreq:g}] Hz"
        )
    if duration_s > settings.max_duration_s:
        raise LimitExceeded(f"{what}: {duration_s:.1f} s of data exceed the limit of {settings.max_duration_s:g} s")
