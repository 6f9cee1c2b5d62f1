"""Errors the server answers with a JSON ``{"error": "..."}`` body and a 4xx status."""

from __future__ import annotations


class ServeError(Exception):
    """Base class: ``status`` is the HTTP status; the message says what was wrong and where."""

    status = 400
    headers: dict[str, str] | None = None


class BadInput(ServeError):
    """Malformed request: wrong tensor shape, datatype, parameters, zip members, ..."""

    status = 400


class Unauthorized(ServeError):
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServeError):
    status = 404


class ModelNotReady(ServeError):
    """The package exists but does not load (names the file at fault)."""

    status = 409


class PayloadTooLarge(ServeError):
    status = 413


class UnsupportedMediaType(ServeError):
    status = 415


class LimitExceeded(ServeError):
    """Recording too long, too many channels, sampling rate out of range, unreadable or unusable input."""

    status = 422


class QueueFull(ServeError):
    status = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after_s)))}


class ServerBusy(ServeError):
    """A server-wide budget (memory of bodies being parsed, upload disk space, failed key checks) is spent: 429
    with ``Retry-After`` rather than growing (every error of this server is a 4xx)."""

    status = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after_s)))}
