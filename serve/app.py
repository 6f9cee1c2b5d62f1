"""The FastAPI app: Open Inference Protocol v2 routes, /v1 conveniences, /metrics; see `create_app`.

Every error is a JSON ``{"error": "..."}`` with a 4xx status (a 5xx is a bug), without server paths or tracebacks
(`client_message`; the log keeps them under the request id). Health and readiness routes (server and models) and
the API documentation (``/docs``, ``/openapi.json``) are open; every other route needs ``Authorization: Bearer KEY``
when the server has a keys file (and only then does the OpenAPI schema declare bearer auth). Requests with a body are
admitted before it is read (`serve.admission`): key, model (404), queue slot (429), then the body's bytes reserved in
a server-wide budget (429 when spent).
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import __version__
from serve.deps import ERROR_CODES, ServerState
from serve.errors import ServeError
from serve.inputs import sweep_stale_uploads
from serve.limits import BodyLimitMiddleware
from serve.observability import ObservabilityMiddleware, request_id_var
from serve.routes_v1 import router as v1_router
from serve.routes_v2 import SIGNAL_INPUTS  # noqa: F401  (SIGNAL_INPUTS: kept importable)
from serve.routes_v2 import router as v2_router
from serve.schemas import ErrorBody, InferRequest, RecordingJSON
from serve.settings import Settings

log = logging.getLogger("brainforge.serve")
# absolute paths in client-facing messages become their last component (the server's folders are not the
# client's business); anything from a traceback on is cut
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^/\s'\"(),;:]+/)+(?=[^/\s'\"(),;:]*)")
_TRACEBACK = re.compile(r"\s*(Traceback \(most recent call last\)|File \"[^\"]+\", line \d+).*", re.DOTALL)


def client_message(message: str) -> str:
    """``message`` without server paths (kept: the file name) or traceback text."""
    return _ABS_PATH.sub("", _TRACEBACK.sub(" (details in the server log)", message)).strip()[:2000]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    """The app: the v2 routes (`serve.routes_v2`), the /v1 conveniences and /metrics (`serve.routes_v1`), auth as a
    dependency of every route but health and readiness (`serve.deps.require_key`), error bodies, middleware."""
    srv = ServerState.create(settings)
    registry = srv.registry

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def warm_up():
            if settings.preload:
                await registry.preload()
            srv.ready = True
            log.info("server ready", extra={"fields": {"registry": str(settings.registry), "auth": srv.keys is not None,
                                                        "models": [f"{m.name}/{m.version}" for m in registry.loaded()],
                                                        "max_batch": settings.max_batch, "max_delay_ms": settings.max_delay_ms}})

        swept = await asyncio.to_thread(sweep_stale_uploads, settings.upload_dir)
        if swept:
            log.warning("removed upload folders left by a killed server", extra={"fields": {"folders": swept}})
        warming = asyncio.get_running_loop().create_task(warm_up())  # live at once, ready once the models are loaded
        yield
        srv.ready = False
        await warming
        log.info("shutting down: finishing admitted requests")
        await registry.close()
        srv.prep_pool.shutdown(wait=True)
        log.info("shutdown complete")

    app = FastAPI(title="brainforge", version=__version__, lifespan=lifespan,
                  description="EEG/MEG model server: Open Inference Protocol v2 and recording uploads.")
    app.state.server = srv
    app.state.settings, app.state.registry, app.state.metrics = settings, registry, srv.metrics
    app.state.budgets = {"memory": srv.memory, "disk": srv.disk}

    # --- errors: always {"error": ...} -------------------------------------------------------------
    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError):
        text = str(e)
        shown = client_message(text)
        if shown != text or e.__cause__ is not None:  # the details stay in the log, under the request id
            log.info("request refused", extra={"fields": {"status": e.status, "error": text,
                                                          "cause": repr(e.__cause__) if e.__cause__ else None}})
        return _error(e.status, shown, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:5]]
        return _error(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.error("unhandled error", exc_info=e)
        return _error(500, f"internal error (request id {request_id_var.get()})")

    app.include_router(v2_router)
    app.include_router(v1_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=srv.metrics)
    app.openapi = lambda: _openapi(app, with_keys=srv.keys is not None)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, with_keys: bool = True) -> dict:
    """FastAPI's schema with our request bodies and every error response as ``{"error": str}``."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (InferRequest, RecordingJSON, ErrorBody):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(js.pop("$defs", {}))
        comps[model.__name__] = js
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    if not with_keys:  # without a keys file nothing needs a key: declare no security scheme
        schema["components"].pop("securitySchemes", None)
    for path_item in schema.get("paths", {}).values():
        for op in path_item.values():
            if not with_keys:
                op.pop("security", None)
                op.get("responses", {}).pop("401", None)
            responses = op.setdefault("responses", {})
            if with_keys and "security" in op:  # too many failed key checks from one client
                responses.setdefault("429", {})
            for code in list(responses):
                if code.startswith("4") or code == "422":
                    responses[code] = {"description": ERROR_CODES.get(int(code), "error"),
                                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    app.openapi_schema = schema
    return schema
