"""The /v1 conveniences: predict and tokenize a recording (multipart upload or JSON), list models, and /metrics."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serve.admission import JSON_MEMORY_FACTOR, Hold, check_length, hold, read_body
from serve.deps import AUTH, ERRORS, Server, get_model, observe_prep, queried_model, run_prep, server
from serve.errors import BadInput, UnsupportedMediaType
from serve.inputs import safe_filename
from serve.pipeline import prepare_json, prepare_upload
from serve.registry import LoadedModel
from serve.schemas import ModelList, PredictResponse, RecordingJSON, TokenizeResponse

router = APIRouter()


def _json_or_multipart_body(with_model_field: bool) -> dict:
    props = {"file": {"type": "string", "format": "binary", "description": "a recording (EDF, BDF, FIF, "
                      "BrainVision as a .zip of its three files, EEGLAB, ...); the extension picks the reader"}}
    if with_model_field:
        props |= {"model": {"type": "string"}, "version": {"type": "string"}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}},
        "application/json": {"schema": {"$ref": "#/components/schemas/RecordingJSON"}},
    }}}


# --- /v1 conveniences --------------------------------------------------------------------------

async def read_input(request: Request, model_field: bool, mem: Hold, space: Hold) -> tuple[Any, Any, str | None, str | None]:
    """(upload, JSON body, form model, form version) from a multipart upload or a JSON recording, with the
    body's bytes reserved before they are read: an upload's srv.disk space (spooled, then copied), a JSON body's
    parse srv.memory."""
    srv = server(request)
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        length = check_length(request.headers, srv.settings.max_body_bytes, "upload")
        space.add(2 * (length or srv.settings.max_body_bytes), "upload")
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
        body = await read_body(request, srv.settings.max_json_bytes, mem, JSON_MEMORY_FACTOR, "JSON body")
        return None, body, None, None
    raise UnsupportedMediaType(
        f"content type {ctype or 'none'!r}: send multipart/form-data with a 'file' field, or application/json")


async def prepared(request: Request, model: LoadedModel, upload: Any, body: Any, space: Hold) -> tuple[Any, str]:
    """(ModelInputs, recording name) on the preprocessing threads; closes the upload."""
    srv = server(request)
    timings: dict[str, float] = {}
    if upload is not None:
        try:
            windows = await run_prep(request, prepare_upload, model.predictor, srv.settings, upload.filename, upload.file,
                                     space, timings)
            observe_prep(request, model, timings)
            return windows, safe_filename(upload.filename)
        finally:
            await upload.close()
    windows, rec = await run_prep(request, prepare_json, model.predictor, srv.settings, body, timings)
    observe_prep(request, model, timings)
    return windows, rec.name


def _json_model_field(body: Any) -> tuple[str | None, str | None]:
    if not body:
        return None, None
    try:
        rec = RecordingJSON.model_validate_json(body)
    except Exception:
        return None, None  # reported when the body is parsed for real
    return rec.model, rec.version


@router.post("/v1/models/{name}/predict", tags=["v1"], dependencies=AUTH, response_model=PredictResponse,
          responses={**ERRORS, 200: {"model": PredictResponse}}, openapi_extra=_json_or_multipart_body(False))

async def predict(request: Request, srv: Server, name: str,
                  model: Annotated[LoadedModel, Depends(queried_model)]) -> JSONResponse:
    # the model dependency answers 404 / 409 before a byte of the upload is read
    async with model.batcher.admit():  # 429 before reading
        with hold(srv.memory) as mem, hold(srv.disk) as space:
            upload, body, _, _ = await read_input(request, False, mem, space)
            windows, _ = await prepared(request, model, upload, body, space)
            del body
        probs = await model.batcher.submit(windows.items)
    out = model.predictor.summarise(windows, np.asarray(probs)).to_dict()
    out |= {"model": name, "version": model.version, "warnings": list(windows.warnings)}
    return JSONResponse(out)


@router.post("/v1/tokenize", tags=["v1"], dependencies=AUTH, response_model=TokenizeResponse,
          responses={**ERRORS, 200: {"model": TokenizeResponse}}, openapi_extra=_json_or_multipart_body(True))

async def tokenize(request: Request, srv: Server,
                   model: str | None = Query(None, description="model whose tokenizer to use (or a form/JSON field)"),
                   version: str | None = Query(None, description="model version (default: the latest)")) -> JSONResponse:
    # with ?model=NAME the model is found (404) and admitted (429) before reading; a form/JSON field is
    # only known once the body has been read (within the byte budgets all the same)
    known = await get_model(request, model, version) if model else None
    async with known.batcher.admit() if known else nullcontext():
        with hold(srv.memory) as mem, hold(srv.disk) as space:
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


@router.get("/v1/models", tags=["v1"], dependencies=AUTH, response_model=ModelList, responses={401: ERRORS[401]})

async def models(srv: Server) -> dict:
    return {"models": await asyncio.to_thread(srv.registry.list)}


@router.get("/metrics", tags=["metrics"], dependencies=AUTH, response_class=Response,
         responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 401: ERRORS[401]})

async def prometheus(srv: Server) -> Response:
    return Response(generate_latest(srv.metrics.registry), media_type=CONTENT_TYPE_LATEST)
