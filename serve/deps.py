"""What the routes share: the server's state (`ServerState`, on ``app.state.server``) and the FastAPI dependencies
and helpers every route uses (API-key check, model lookup, the preprocessing thread pool)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve.admission import Budget
from serve.auth import FailureLimiter, KeyStore
from serve.errors import ServerBusy, Unauthorized
from serve.observability import Metrics
from serve.registry import LoadedModel, ModelRegistry
from serve.schemas import ErrorBody
from serve.settings import Settings

ERROR_CODES = {400: "bad request", 401: "missing or invalid API key", 404: "unknown model or version",
               409: "model not ready (broken package or shutting down)", 413: "body too large",
               415: "unsupported content type", 422: "input outside the limits or unusable",
               429: "queue full, server budget spent, or too many failed key checks (see Retry-After)"}
ERRORS = {code: {"model": ErrorBody, "description": text} for code, text in ERROR_CODES.items()}


@dataclass
class ServerState:
    """One app's server: settings, metrics, models, keys and the byte budgets (``ready`` once models are loaded)."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    keys: KeyStore | None
    key_failures: FailureLimiter
    memory: Budget  # JSON bodies being parsed
    disk: Budget  # uploads and unpacked zips
    prep_pool: ThreadPoolExecutor
    ready: bool = False

    @classmethod
    def create(cls, settings: Settings) -> ServerState:
        metrics = Metrics()
        return cls(
            settings=settings, metrics=metrics, registry=ModelRegistry(settings, metrics),
            keys=KeyStore(settings.api_keys) if settings.api_keys else None,
            key_failures=FailureLimiter(max_failures=settings.max_key_failures, window_s=60.0),
            memory=Budget("memory budget for JSON bodies", int(settings.max_inflight_mb * 2**20)),
            disk=Budget("upload disk space", int(settings.max_upload_space_mb * 2**20)),
            prep_pool=ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="prep"),
        )


def server(request: Request) -> ServerState:
    return request.app.state.server


bearer = HTTPBearer(auto_error=False, description="API key from `python -m serve keys add`")


async def require_key(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The auth dependency: with a keys file, a valid ``Authorization: Bearer KEY`` (401), and a tarpit then 429
    for a client over its failed-check budget."""
    srv = server(request)
    if srv.keys is None:
        return
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer KEY'")
    token = creds.credentials
    # a keyed hash takes microseconds: checked inline; legacy scrypt entries go to a thread
    key_id = await asyncio.to_thread(srv.keys.verify, token) if srv.keys.needs_thread(token) else srv.keys.verify(token)
    if key_id is None:
        wait = srv.key_failures.fail(request.client.host if request.client else "-")
        if wait is not None:
            # tarpit: a client over its failure budget waits before each answer, so a flood of wrong keys
            # slows itself down instead of keeping the event loop busy (a sleeping coroutine costs nothing)
            await asyncio.sleep(srv.settings.key_failure_delay_s)
            raise ServerBusy(f"too many failed API key checks from this client; retry in {wait:.0f} s",
                             retry_after_s=int(wait) + 1)
        raise Unauthorized("invalid or revoked API key")
    request.state.key_id = key_id


AUTH = [Depends(require_key)]


async def run_prep(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the preprocessing threads; the request id follows the work into the thread's log lines."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(server(request).prep_pool, ctx.run, fn, *args)


def observe_prep(request: Request, model: LoadedModel, timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        server(request).metrics.stage.labels(model.name, model.version, stage).observe(seconds)


async def get_model(request: Request, name: str, version: str | None) -> LoadedModel:
    """The loaded model (404 unknown, 409 not ready); the request's metrics are labelled with its name."""
    model = await server(request).registry.get(name, version)
    request.state.model = name
    return model


# --- dependencies: the server's state, and the model a route's path names (404 / 409 before the body is read) ---

Server = Annotated[ServerState, Depends(server)]


async def latest_model(request: Request, name: str) -> LoadedModel:
    return await get_model(request, name, None)


async def versioned_model(request: Request, name: str, version: str) -> LoadedModel:
    return await get_model(request, name, version)


async def queried_model(request: Request, name: str,
                        version: str | None = Query(None, description="model version (default: the latest)")) -> LoadedModel:
    return await get_model(request, name, version)
