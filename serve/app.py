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
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import __version__
from serve.admission import JSON_MEMORY_FACTOR, Budget, Hold, check_length, hold, read_body
from serve.auth import FailureLimiter, KeyStore
from serve.errors import (
    BadInput,
    ModelNotFound,
    ModelNotReady,
    ServeError,
    ServerBusy,
    Unauthorized,
    UnsupportedMediaType,
)
from serve.inputs import safe_filename, sweep_stale_uploads
from serve.limits import BodyLimitMiddleware
from serve.observability import Metrics, ObservabilityMiddleware, request_id_var
from serve.pipeline import prepare_json, prepare_raw_body, prepare_upload, prepare_v2
from serve.registry import LoadedModel, ModelRegistry
from serve.schemas import (
    ErrorBody,
    InferRequest,
    InferResponse,
    ModelList,
    ModelMetadata,
    PredictResponse,
    RecordingJSON,
    ServerMetadata,
    TokenizeResponse,
)
from serve.settings import Settings

log = logging.getLogger("brainforge.serve")
ERROR_CODES = {400: "bad request", 401: "missing or invalid API key", 404: "unknown model or version",
               409: "model not ready (broken package or shutting down)", 413: "body too large",
               415: "unsupported content type", 422: "input outside the limits or unusable",
               429: "queue full, server budget spent, or too many failed key checks (see Retry-After)"}
# absolute paths in client-facing messages become their last component (the server's folders are not the
# client's business); anything from a traceback on is cut
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^/\s'\"(),;:]+/)+(?=[^/\s'\"(),;:]*)")
_TRACEBACK = re.compile(r"\s*(Traceback \(most recent call last\)|File \"[^\"]+\", line \d+).*", re.DOTALL)


def client_message(message: str) -> str:
    """``message`` without server paths (kept: the file name) or traceback text."""
    return _ABS_PATH.sub("", _TRACEBACK.sub(" (details in the server log)", message)).strip()[:2000]


# what infer accepts, exactly (OIP shapes cannot say "rank 2 or 3": a recording and epochs are two inputs)
SIGNAL_INPUTS = [
    {"name": "signal", "datatype": "FP32", "shape": [-1, -1],
     "parameters": {"layout": "[C, T]: one continuous recording; SI units (V, T, T/m); or give 'epochs'"}},
    {"name": "epochs", "datatype": "FP32", "shape": [-1, -1, -1],
     "parameters": {"optional": True, "layout": "[N, C, T]: N epochs, each answered separately; instead of 'signal'"}},
    {"name": "channel_names", "datatype": "BYTES", "shape": [-1],
     "parameters": {"optional": True, "default": "parameters.channel_names"}},
    {"name": "channel_types", "datatype": "BYTES", "shape": [-1], "parameters": {"optional": True, "default": "eeg"}},
    {"name": "positions", "datatype": "FP32", "shape": [-1, 3],
     "parameters": {"optional": True, "units": "metres, head frame"}},
    {"name": "orientations", "datatype": "FP32", "shape": [-1, 3],
     "parameters": {"optional": True, "units": "unit vectors, head frame (MEG coils)"}},
]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _json_or_multipart_body(with_model_field: bool) -> dict:
    props = {"file": {"type": "string", "format": "binary", "description": "a recording (EDF, BDF, FIF, "
                      "BrainVision as a .zip of its three files, EEGLAB, ...); the extension picks the reader"}}
    if with_model_field:
        props |= {"model": {"type": "string"}, "version": {"type": "string"}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}},
        "application/json": {"schema": {"$ref": "#/components/schemas/RecordingJSON"}},
    }}}


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics)
    keys = KeyStore(settings.api_keys) if settings.api_keys else None
    key_failures = FailureLimiter(max_failures=settings.max_key_failures, window_s=60.0)
    memory = Budget("memory budget for JSON bodies", int(settings.max_inflight_mb * 2**20))
    disk = Budget("upload disk space", int(settings.max_upload_space_mb * 2**20))
    prep_pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="prep")
    bearer = HTTPBearer(auto_error=False, description="API key from `python -m serve keys add`")
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async def warm_up():
            if settings.preload:
                await registry.preload()
            state["ready"] = True
            log.info("server ready", extra={"fields": {"registry": str(settings.registry), "auth": keys is not None,
                                                        "models": [f"{m.name}/{m.version}" for m in registry.loaded()],
                                                        "max_batch": settings.max_batch, "max_delay_ms": settings.max_delay_ms}})

        swept = await asyncio.to_thread(sweep_stale_uploads, settings.upload_dir)
        if swept:
            log.warning("removed upload folders left by a killed server", extra={"fields": {"folders": swept}})
        warming = asyncio.get_running_loop().create_task(warm_up())  # live at once, ready once the models are loaded
        yield
        state["ready"] = False
        await warming
        log.info("shutting down: finishing admitted requests")
        await registry.close()
        prep_pool.shutdown(wait=True)
        log.info("shutdown complete")

    app = FastAPI(title="brainforge", version=__version__, lifespan=lifespan,
                  description="EEG/MEG model server: Open Inference Protocol v2 and recording uploads.")
    app.state.settings, app.state.registry, app.state.metrics = settings, registry, metrics
    app.state.budgets = {"memory": memory, "disk": disk}

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

    # --- auth ------------------------------------------------------------------------------------
    async def require_key(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if keys is None:
            return
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise Unauthorized("missing API key: send 'Authorization: Bearer KEY'")
        token = creds.credentials
        # a keyed hash takes microseconds: checked inline; legacy scrypt entries go to a thread
        key_id = await asyncio.to_thread(keys.verify, token) if keys.needs_thread(token) else keys.verify(token)
        if key_id is None:
            wait = key_failures.fail(request.client.host if request.client else "-")
            if wait is not None:
                # tarpit: a client over its failure budget waits before each answer, so a flood of wrong keys
                # slows itself down instead of keeping the event loop busy (a sleeping coroutine costs nothing)
                await asyncio.sleep(settings.key_failure_delay_s)
                raise ServerBusy(f"too many failed API key checks from this client; retry in {wait:.0f} s",
                                 retry_after_s=int(wait) + 1)
            raise Unauthorized("invalid or revoked API key")
        request.state.key_id = key_id

    auth = [Depends(require_key)]
    errors = {code: {"model": ErrorBody, "description": text} for code, text in ERROR_CODES.items()}

    async def run_prep(fn: Callable[..., Any], *args: Any) -> Any:
        ctx = contextvars.copy_context()  # the request id follows the work into the thread's log lines
        return await asyncio.get_running_loop().run_in_executor(prep_pool, ctx.run, fn, *args)

    def observe_prep(model: LoadedModel, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            metrics.stage.labels(model.name, model.version, stage).observe(seconds)

    async def get_model(request: Request, name: str, version: str | None) -> LoadedModel:
        model = await registry.get(name, version)
        request.state.model = name
        return model

    # --- health and server metadata ----------------------------------------------------------------
    @app.get("/v2/health/live", tags=["health"], responses={200: {"content": {"application/json": {}}}})
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"], responses={409: errors[409]})
    async def ready() -> dict:
        if not state["ready"]:
            raise ModelNotReady("server is loading its models, or shutting down")
        if not settings.registry.is_dir():
            raise ModelNotReady("the registry folder is missing")
        broken = []
        for entry in await asyncio.to_thread(registry.list):  # ready: every model's latest version is ready
            try:
                await registry.get(entry["name"])
            except ModelNotReady as e:
                broken.append(str(e))
            except ModelNotFound:
                pass
        if broken:
            raise ModelNotReady(f"{len(broken)} model(s) not ready: " + "; ".join(broken[:5]))
        return {"ready": True}

    @app.get("/v2", tags=["v2"], dependencies=auth, response_model=ServerMetadata, responses={401: errors[401]})
    async def server_metadata() -> dict:
        return {"name": "brainforge", "version": __version__, "extensions": ["binary_tensor_data"]}

    # --- v2 model routes (with and without /versions/{version}) --------------------------------------
    async def model_metadata(request: Request, name: str, version: str | None) -> dict:
        model = await get_model(request, name, version)
        prep = model.package.preprocessing
        labels = [str(x) for x in model.package.labels]
        return {
            "name": name, "versions": registry.versions(name) or [model.version], "platform": "brainforge_pytorch",
            "inputs": SIGNAL_INPUTS,
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1]},
                {"name": "t0_s", "datatype": "FP64", "shape": [-1]},
                {"name": "source_index", "datatype": "INT64", "shape": [-1]},
                {"name": "class_labels", "datatype": "BYTES", "shape": [len(labels)]},
            ],
            # OIP parameter values are strings, numbers or booleans: the labels are the class_labels output
            "parameters": {"version": model.version, "labels": ",".join(labels), "input_kind": prep.input_kind,
                           "window_s": float(prep.window_s), "required_parameters": "sfreq"},
        }

    async def model_ready(request: Request, name: str, version: str | None) -> dict:
        model = await get_model(request, name, version)
        return {"name": name, "version": model.version, "ready": True}

    async def infer(request: Request, name: str, version: str | None) -> JSONResponse:
        model = await get_model(request, name, version)  # 404 before reading
        check_length(request.headers, settings.max_json_bytes, "JSON body")  # 413 before reading
        ctype = request.headers.get("content-type", "").lower()
        header_length = request.headers.get("inference-header-content-length")
        timings: dict[str, float] = {}
        async with model.batcher.admit():  # 429 before reading
            with hold(memory) as mem:
                body = await read_body(request, settings.max_json_bytes, mem, JSON_MEMORY_FACTOR, "JSON body")
                if ctype.startswith("application/octet-stream") and header_length is None:
                    windows, req = await run_prep(prepare_raw_body, model.predictor, settings, body,
                                                  dict(request.query_params), timings)
                else:
                    try:
                        hl = None if header_length is None else int(header_length)
                    except ValueError as e:
                        raise BadInput(f"Inference-Header-Content-Length {header_length!r} is not an integer") from e
                    windows, req = await run_prep(prepare_v2, model.predictor, settings, body, hl, timings)
                del body
                request_id = req.id
                req.inputs.clear()  # the parsed lists are garbage now; the budget is released with them
            observe_prep(model, timings)
            probs = await model.batcher.submit(windows.items)
        labels = [str(x) for x in model.package.labels]
        probs = np.asarray(probs, dtype=np.float32)
        summary = model.predictor.summarise(windows, probs).to_dict()
        outputs = [
            {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape), "data": probs.ravel().tolist()},
            {"name": "labels", "datatype": "BYTES", "shape": [len(probs)], "data": [labels[i] for i in probs.argmax(1)]},
            {"name": "t0_s", "datatype": "FP64", "shape": [len(probs)], "data": np.asarray(windows.t0_s, float).tolist()},
            {"name": "source_index", "datatype": "INT64", "shape": [len(probs)],
             "data": np.asarray(windows.source_index, np.int64).tolist()},
            {"name": "class_labels", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
        ]
        if req.outputs:
            wanted = {o.name for o in req.outputs}
            unknown = wanted - {o["name"] for o in outputs}
            if unknown:
                raise BadInput(f"unknown requested outputs {sorted(unknown)}")
            outputs = [o for o in outputs if o["name"] in wanted]
        params = {"recording_label": str(summary.get("summary", {}).get("label", ""))}
        return JSONResponse({"model_name": name, "model_version": model.version, "id": request_id or request_id_var.get(),
                             "parameters": params, "outputs": outputs})

    def add_model_routes(suffix: str, handler: Callable[..., Awaitable[Any]], method: str, keyed: bool = True,
                         **kw: Any) -> None:
        async def unversioned(request: Request, name: str):
            return await handler(request, name, None)

        async def versioned(request: Request, name: str, version: str):
            return await handler(request, name, version)

        for path, endpoint in ((f"/v2/models/{{name}}{suffix}", unversioned),
                               (f"/v2/models/{{name}}/versions/{{version}}{suffix}", versioned)):
            endpoint.__name__ = f"{handler.__name__}_{'versioned' if endpoint is versioned else 'latest'}"
            app.add_api_route(path, endpoint, methods=[method], dependencies=auth if keyed else [],
                              tags=["v2"] if keyed else ["health"], **kw)

    model_errors = {c: errors[c] for c in (400, 401, 404, 409)}
    add_model_routes("", model_metadata, "GET", response_model=ModelMetadata, responses=model_errors)
    add_model_routes("/ready", model_ready, "GET", keyed=False, responses={c: errors[c] for c in (404, 409)})
    add_model_routes("/infer", infer, "POST", response_model=InferResponse,
                     responses={**errors, 200: {"model": InferResponse}},
                     openapi_extra={"requestBody": {"required": True, "description": (
                         "JSON (InferRequest); or the binary tensor extension: the JSON header, then the tensors with "
                         "parameters.binary_data_size, with header Inference-Header-Content-Length; or "
                         "application/octet-stream: float32 little-endian [C, T] with query parameters sfreq, "
                         "channel_names (comma-separated), optional channel_types, shape, id"), "content": {
                         "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                         "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})

    # --- /v1 conveniences --------------------------------------------------------------------------
    async def read_input(request: Request, model_field: bool, mem: Hold, space: Hold) -> tuple[Any, Any, str | None, str | None]:
        """(upload, JSON body, form model, form version) from a multipart upload or a JSON recording, with the
        body's bytes reserved before they are read: an upload's disk space (spooled, then copied), a JSON body's
        parse memory."""
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("multipart/form-data"):
            length = check_length(request.headers, settings.max_body_bytes, "upload")
            space.add(2 * (length or settings.max_body_bytes), "upload")
            form = await request.form(max_files=1, max_fields=8)
            try:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise BadInput("multipart body needs a file field named 'file'")
                name = form.get("model") if model_field else None
                version = form.get("version") if model_field else None
                return upload, None, name if isinstance(name, str) else None, version if isinstance(version, str) else None
            except BaseException:
                await form.close()
                raise
        if ctype.startswith("application/json"):
            body = await read_body(request, settings.max_json_bytes, mem, JSON_MEMORY_FACTOR, "JSON body")
            return None, body, None, None
        raise UnsupportedMediaType(
            f"content type {ctype or 'none'!r}: send multipart/form-data with a 'file' field, or application/json")

    async def prepared(request: Request, model: LoadedModel, upload: Any, body: Any, space: Hold) -> tuple[Any, str]:
        """(ModelInputs, recording name) on the preprocessing threads; closes the upload."""
        timings: dict[str, float] = {}
        if upload is not None:
            try:
                windows = await run_prep(prepare_upload, model.predictor, settings, upload.filename, upload.file,
                                         space, timings)
                observe_prep(model, timings)
                return windows, safe_filename(upload.filename)
            finally:
                await upload.close()
        windows, rec = await run_prep(prepare_json, model.predictor, settings, body, timings)
        observe_prep(model, timings)
        return windows, rec.name

    def _json_model_field(body: Any) -> tuple[str | None, str | None]:
        if not body:
            return None, None
        try:
            rec = RecordingJSON.model_validate_json(body)
        except Exception:
            return None, None  # reported when the body is parsed for real
        return rec.model, rec.version

    @app.post("/v1/models/{name}/predict", tags=["v1"], dependencies=auth, response_model=PredictResponse,
              responses={**errors, 200: {"model": PredictResponse}}, openapi_extra=_json_or_multipart_body(False))
    async def predict(request: Request, name: str,
                      version: str | None = Query(None, description="model version (default: the latest)")) -> JSONResponse:
        model = await get_model(request, name, version)  # 404 before a byte of the upload is read
        async with model.batcher.admit():  # 429 before reading
            with hold(memory) as mem, hold(disk) as space:
                upload, body, _, _ = await read_input(request, False, mem, space)
                windows, _ = await prepared(request, model, upload, body, space)
                del body
            probs = await model.batcher.submit(windows.items)
        out = model.predictor.summarise(windows, np.asarray(probs)).to_dict()
        out |= {"model": name, "version": model.version, "warnings": list(windows.warnings)}
        return JSONResponse(out)

    @app.post("/v1/tokenize", tags=["v1"], dependencies=auth, response_model=TokenizeResponse,
              responses={**errors, 200: {"model": TokenizeResponse}}, openapi_extra=_json_or_multipart_body(True))
    async def tokenize(request: Request,
                       model: str | None = Query(None, description="model whose tokenizer to use (or a form/JSON field)"),
                       version: str | None = Query(None, description="model version (default: the latest)")) -> JSONResponse:
        # with ?model=NAME the model is found (404) and admitted (429) before reading; a form/JSON field is
        # only known once the body has been read (within the byte budgets all the same)
        known = await get_model(request, model, version) if model else None
        async with known.batcher.admit() if known else nullcontext():
            with hold(memory) as mem, hold(disk) as space:
                upload, body, form_model, form_version = await read_input(request, True, mem, space)
                try:
                    if known is None and body is not None:
                        form_model, form_version = _json_model_field(body)
                    if known is None and not form_model:
                        raise BadInput("say which model's tokenizer to use: ?model=NAME (or a 'model' form/JSON field)")
                    loaded = known or await get_model(request, form_model, version or form_version)
                    async with nullcontext() if known else loaded.batcher.admit():
                        windows, recording = await prepared(request, loaded, upload, body, space)
                        upload = None
                        del body
                        mem.close()
                        tokens = await loaded.batcher.run(loaded.predictor.tokenize_items, windows.items)
                finally:
                    if upload is not None:
                        await upload.close()
        tokens = np.asarray(tokens)
        return JSONResponse({"model": loaded.name, "version": loaded.version, "recording": recording,
                             "shape": list(tokens.shape), "t0_s": np.asarray(windows.t0_s, float).tolist(),
                             "tokens": tokens.tolist(), "warnings": list(windows.warnings)})

    @app.get("/v1/models", tags=["v1"], dependencies=auth, response_model=ModelList, responses={401: errors[401]})
    async def models() -> dict:
        return {"models": await asyncio.to_thread(registry.list)}

    @app.get("/metrics", tags=["metrics"], dependencies=auth, response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 401: errors[401]})
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app, with_keys=keys is not None)  # type: ignore[method-assign]
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
