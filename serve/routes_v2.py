"""Open Inference Protocol v2 routes: server health and metadata, and per model (with and without
``/versions/{version}``) metadata, readiness and ``infer``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from serve import __version__
from serve.admission import JSON_MEMORY_FACTOR, check_length, hold, read_body
from serve.deps import AUTH, ERRORS, Server, latest_model, observe_prep, run_prep, server, versioned_model
from serve.errors import BadInput, ModelNotFound, ModelNotReady
from serve.observability import request_id_var
from serve.pipeline import prepare_raw_body, prepare_v2
from serve.registry import LoadedModel
from serve.schemas import InferResponse, ModelMetadata, ServerMetadata

router = APIRouter()

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

# --- health and server metadata ----------------------------------------------------------------

@router.get("/v2/health/live", tags=["health"], responses={200: {"content": {"application/json": {}}}})

async def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", tags=["health"], responses={409: ERRORS[409]})

async def ready(srv: Server) -> dict:
    if not srv.ready:
        raise ModelNotReady("server is loading its models, or shutting down")
    if not srv.settings.registry.is_dir():
        raise ModelNotReady("the registry folder is missing")
    broken = []
    for entry in await asyncio.to_thread(srv.registry.list):  # ready: every model's latest version is ready
        try:
            await srv.registry.get(entry["name"])
        except ModelNotReady as e:
            broken.append(str(e))
        except ModelNotFound:
            pass
    if broken:
        raise ModelNotReady(f"{len(broken)} model(s) not ready: " + "; ".join(broken[:5]))
    return {"ready": True}


@router.get("/v2", tags=["v2"], dependencies=AUTH, response_model=ServerMetadata, responses={401: ERRORS[401]})

async def server_metadata() -> dict:
    return {"name": "brainforge", "version": __version__, "extensions": ["binary_tensor_data"]}


# --- v2 model routes (with and without /versions/{version}) --------------------------------------

async def model_metadata(request: Request, model: LoadedModel) -> dict:
    srv, name = server(request), model.name
    prep = model.package.preprocessing
    labels = [str(x) for x in model.package.labels]
    return {
        "name": name, "versions": srv.registry.versions(name) or [model.version], "platform": "brainforge_pytorch",
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


async def model_ready(request: Request, model: LoadedModel) -> dict:
    return {"name": model.name, "version": model.version, "ready": True}


async def infer(request: Request, model: LoadedModel) -> JSONResponse:
    srv, name = server(request), model.name  # the model dependency answered 404 / 409 before reading
    check_length(request.headers, srv.settings.max_json_bytes, "JSON body")  # 413 before reading
    ctype = request.headers.get("content-type", "").lower()
    header_length = request.headers.get("inference-header-content-length")
    timings: dict[str, float] = {}
    async with model.batcher.admit():  # 429 before reading
        with hold(srv.memory) as mem:
            body = await read_body(request, srv.settings.max_json_bytes, mem, JSON_MEMORY_FACTOR, "JSON body")
            if ctype.startswith("application/octet-stream") and header_length is None:
                windows, req = await run_prep(request, prepare_raw_body, model.predictor, srv.settings, body,
                                              dict(request.query_params), timings)
            else:
                try:
                    hl = None if header_length is None else int(header_length)
                except ValueError as e:
                    raise BadInput(f"Inference-Header-Content-Length {header_length!r} is not an integer") from e
                windows, req = await run_prep(request, prepare_v2, model.predictor, srv.settings, body, hl, timings)
            del body
            request_id = req.id
            req.inputs.clear()  # the parsed lists are garbage now; the budget is released with them
        observe_prep(request, model, timings)
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
    async def unversioned(request: Request, model: Annotated[LoadedModel, Depends(latest_model)]):
        return await handler(request, model)

    async def versioned(request: Request, model: Annotated[LoadedModel, Depends(versioned_model)]):
        return await handler(request, model)

    for path, endpoint in ((f"/v2/models/{{name}}{suffix}", unversioned),
                           (f"/v2/models/{{name}}/versions/{{version}}{suffix}", versioned)):
        endpoint.__name__ = f"{handler.__name__}_{'versioned' if endpoint is versioned else 'latest'}"
        router.add_api_route(path, endpoint, methods=[method], dependencies=AUTH if keyed else [],
                          tags=["v2"] if keyed else ["health"], **kw)


model_errors = {c: ERRORS[c] for c in (400, 401, 404, 409)}
add_model_routes("", model_metadata, "GET", response_model=ModelMetadata, responses=model_errors)
add_model_routes("/ready", model_ready, "GET", keyed=False, responses={c: ERRORS[c] for c in (404, 409)})
add_model_routes("/infer", infer, "POST", response_model=InferResponse,
                 responses={**ERRORS, 200: {"model": InferResponse}},
                 openapi_extra={"requestBody": {"required": True, "description": (
                     "JSON (InferRequest); or the binary tensor extension: the JSON header, then the tensors with "
                     "parameters.binary_data_size, with header Inference-Header-Content-Length; or "
                     "application/octet-stream: float32 little-endian [C, T] with query parameters sfreq, "
                     "channel_names (comma-separated), optional channel_types, shape, id"), "content": {
                     "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
