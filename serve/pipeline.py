"""Request bodies -> model inputs, run on the preprocessing threads (never on the event loop).

Each function returns the predictor's `ModelInputs` (items [C, T] float32 scaled units, t0_s, layout, warnings)
made by the package's own code path (`Predictor.prepare_raw` / `prepare_epochs`, as ``finetune predict``).
Errors become `ServeError`s: malformed -> 400, outside the limits or unusable data -> 422.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydantic import ValidationError

from serve.errors import BadInput, LimitExceeded, ServeError
from serve.inputs import (
    as_str_list,
    check_signal,
    decode_tensor,
    find_recording,
    make_info,
    mne_input,
    request_tmpdir,
    safe_filename,
    unpack_zip,
)
from serve.limits import check_recording
from serve.schemas import InferRequest, RecordingJSON
from serve.settings import Settings

log = logging.getLogger("brainforge.serve.pipeline")  # runs on the preprocessing threads, with the request id

def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid request body: " + "; ".join(parts)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map the data and fine-tuning stages' input errors to 422 and MNE's argument errors to 400."""
    from data.errors import BrainforgeDataError
    from finetune.errors import FinetuneDataError

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServeError:
            raise
        except ValidationError as e:
            raise BadInput(_validation_message(e)) from e
        except (BrainforgeDataError, FinetuneDataError) as e:
            log.info("input unusable", extra={"fields": {"error": str(e), "type": type(e).__name__}})
            raise LimitExceeded(str(e)) from e
        except (ValueError, TypeError) as e:
            log.info("input refused", extra={"fields": {"error": str(e), "type": type(e).__name__}})
            raise BadInput(f"cannot use the input: {e}") from e

    return wrapper


def _check_limits(settings: Settings, obj, what: str) -> None:
    """The server's limits (channels, sampling rate, duration) on an opened MNE Raw or Epochs."""
    import mne

    sfreq = float(obj.info["sfreq"])
    n_samples = len(obj) * len(obj.times) if isinstance(obj, mne.BaseEpochs) else obj.n_times
    check_recording(settings, len(obj.ch_names), sfreq, n_samples / sfreq, what)


def _prepare(predictor, settings: Settings, obj, what: str):
    """Limits on an MNE Raw / Epochs, then the predictor's own preparation."""
    _check_limits(settings, obj, what)
    return predictor.prepare(obj, what)


#: Open Inference Protocol binary tensor extension: datatype -> little-endian numpy dtype (BYTES is length-prefixed)
BINARY_DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
                 "INT64": "<i8", "UINT8": "u1", "BOOL": "?"}
V2_INPUTS = ("signal", "epochs", "channel_names", "channel_types", "positions", "orientations")


def _binary_tensor(name: str, shape: list[int], datatype: str, raw: memoryview) -> np.ndarray:
    """Bytes of one tensor (binary extension) -> numpy array of ``shape`` (a copy only for BYTES)."""
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise BadInput(f"input {name!r}: shape {shape} must hold non-negative integers")
    n = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        out, pos = [], 0
        for _ in range(n):
            if pos + 4 > len(raw):
                raise BadInput(f"input {name!r}: binary BYTES data ends inside an element's 4-byte length")
            k = int.from_bytes(raw[pos : pos + 4], "little")
            if pos + 4 + k > len(raw):
                raise BadInput(f"input {name!r}: binary BYTES element of {k} bytes runs past binary_data_size")
            try:
                out.append(bytes(raw[pos + 4 : pos + 4 + k]).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise BadInput(f"input {name!r}: BYTES element is not UTF-8 ({e})") from e
            pos += 4 + k
        if pos != len(raw):
            raise BadInput(f"input {name!r}: {len(raw) - pos} bytes left over after {n} BYTES elements")
        return np.asarray(out, dtype=object).reshape(shape)
    if datatype not in BINARY_DTYPES:
        raise BadInput(f"input {name!r}: datatype {datatype!r} is not supported (use FP32)")
    dt = np.dtype(BINARY_DTYPES[datatype])
    if len(raw) != n * dt.itemsize:
        raise BadInput(f"input {name!r}: binary_data_size {len(raw)} bytes does not hold shape {shape} of {datatype} "
                       f"({n * dt.itemsize} bytes)")
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def parse_v2(body: bytes, header_length: int | None = None,
             settings: Settings | None = None) -> tuple[InferRequest, dict[str, np.ndarray]]:
    """A v2 infer body -> (the request, its input tensors by name).

    ``header_length`` (the ``Inference-Header-Content-Length`` header) marks the binary tensor extension: the first
    ``header_length`` bytes are the JSON request, and the tensors whose ``parameters.binary_data_size`` is set follow
    it back to back, in the order of ``inputs``, row-major and little-endian (BYTES: a 4-byte length before each
    element). Inputs may mix JSON ``data`` and binary data.
    """
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise BadInput(f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes")
        req = InferRequest.model_validate_json(body[:header_length])
        binary = memoryview(body)[header_length:]
    else:
        req, binary = InferRequest.model_validate_json(body), memoryview(b"")
    tensors: dict[str, np.ndarray] = {}
    pos = 0
    for inp in req.inputs:
        if inp.name in tensors:
            raise BadInput(f"input {inp.name!r} given twice")
        if inp.name not in V2_INPUTS:
            raise BadInput(f"unknown input {inp.name!r} (expected {', '.join(V2_INPUTS)})")
        if inp.name in ("signal", "epochs") and inp.datatype not in ("FP32", "FP64", "FP16"):
            raise BadInput(f"input {inp.name!r} must be FP32, got {inp.datatype}")
        if inp.name in ("signal", "epochs") and len(inp.shape) != (2 if inp.name == "signal" else 3):
            raise BadInput(f"input {inp.name!r} must be {'[C, T]' if inp.name == 'signal' else '[N, C, T]'}, got "
                           f"shape {inp.shape}" + (" (N epochs go in the input 'epochs')" if inp.name == "signal" else ""))
        if inp.name in ("signal", "epochs") and settings is not None:  # refuse before decoding anything
            if len(inp.shape) in (2, 3) and isinstance(inp.shape[-2], int) and inp.shape[-2] > settings.max_channels:
                raise LimitExceeded(f"signal: {inp.shape[-2]} channels exceed the limit of {settings.max_channels}")
            if all(isinstance(d, int) for d in inp.shape) and math.prod(inp.shape) > settings.max_body_bytes:
                raise BadInput(f"signal shape {inp.shape} is larger than any accepted body")
        size = (inp.parameters or {}).get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise BadInput(f"input {inp.name!r} has binary_data_size but the request has no "
                               "Inference-Header-Content-Length header")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise BadInput(f"input {inp.name!r}: binary_data_size {size!r} does not fit the "
                               f"{len(binary) - pos} bytes left in the body")
            if inp.data is not None:
                raise BadInput(f"input {inp.name!r} has both data and binary_data_size")
            tensors[inp.name] = _binary_tensor(inp.name, inp.shape, inp.datatype, binary[pos : pos + size])
            pos += size
        else:
            if inp.data is None:
                raise BadInput(f"input {inp.name!r} has neither data nor parameters.binary_data_size")
            tensors[inp.name] = decode_tensor(inp.name, inp.shape, inp.datatype, inp.data)
    if pos != len(binary):
        raise BadInput(f"{len(binary) - pos} bytes after the JSON header are not claimed by any binary_data_size")
    if ("signal" in tensors) == ("epochs" in tensors):
        raise BadInput("give exactly one of the inputs 'signal' (FP32 [C, T], one recording) and 'epochs' "
                       "(FP32 [N, C, T])")
    if "epochs" in tensors:
        tensors["signal"] = tensors.pop("epochs")
    return req, tensors


_INFO_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_INFO_CACHE_SIZE = 64
_INFO_LOCK = threading.Lock()


def cached_info(names: list[str], types: list[str] | None, sfreq: float,
                positions: np.ndarray | None = None, orientations: np.ndarray | None = None):
    """`make_info`, remembered per (names, types, sfreq, positions, orientations): building an MNE Info for 64
    channels costs more than filtering a 10 s request, and clients send the same montage again and again. The
    Info is shared read-only (`ArrayRecording` keeps it, `mne.EpochsArray` copies it; nothing on the request path
    changes it); invalid inputs are never cached."""
    key = (tuple(names), None if types is None else tuple(types), float(sfreq),
           None if positions is None else np.asarray(positions, np.float64).tobytes(),
           None if orientations is None else np.asarray(orientations, np.float64).tobytes())
    with _INFO_LOCK:
        info = _INFO_CACHE.get(key)
        if info is not None:
            _INFO_CACHE.move_to_end(key)
            return info
    info = make_info(names, types, sfreq, positions, orientations)
    with _INFO_LOCK:
        _INFO_CACHE[key] = info
        while len(_INFO_CACHE) > _INFO_CACHE_SIZE:
            _INFO_CACHE.popitem(last=False)
    return info


def _check_signal_shape(settings: Settings, x: np.ndarray) -> None:
    if x.ndim in (2, 3) and x.shape[-2] > settings.max_channels:
        raise LimitExceeded(f"signal: {x.shape[-2]} channels exceed the limit of {settings.max_channels}")


def _timed_prepare(predictor, settings: Settings, raw, name: str, t0: float, timings: dict | None):
    """`_prepare`, recording in ``timings`` (when given) ``parse`` = from ``t0`` until now and ``preprocess``."""
    t1 = time.perf_counter()
    windows = _prepare(predictor, settings, raw, name)
    if timings is not None:
        timings.update(parse=t1 - t0, preprocess=time.perf_counter() - t1)
    return windows


@guarded
def prepare_v2(predictor, settings: Settings, body: bytes, header_length: int | None = None,
               timings: dict | None = None):
    """A v2 infer body -> (ModelInputs, the request). Inputs: signal, [channel_names, channel_types, positions].

    ``timings`` (a dict), when given, receives ``parse`` (body -> arrays and channel info) and ``preprocess``
    (-> model windows) in seconds.
    """
    t0 = time.perf_counter()
    req, tensors = parse_v2(body, header_length, settings)
    if "signal" not in tensors:
        raise BadInput("input 'signal' (FP32 [C, T] or [N, C, T]) is missing")
    _check_signal_shape(settings, tensors["signal"])
    params = req.parameters or {}
    sfreq = params.get("sfreq")
    if isinstance(sfreq, bool) or not isinstance(sfreq, int | float):
        raise BadInput("parameters.sfreq (sampling rate in Hz, a number) is missing")
    names = as_str_list(tensors["channel_names"].tolist(), "channel_names") if "channel_names" in tensors else \
        as_str_list(params.get("channel_names"), "parameters.channel_names")
    if names is None:
        raise BadInput("channel names are missing: give an input 'channel_names' (BYTES [C]) or parameters.channel_names")
    types = as_str_list(tensors["channel_types"].tolist(), "channel_types") if "channel_types" in tensors else \
        as_str_list(params.get("channel_types"), "parameters.channel_types")
    x = check_signal(tensors["signal"], "input 'signal'")
    info = cached_info(names, types, float(sfreq), tensors.get("positions"), tensors.get("orientations"))
    name = str(params.get("recording") or req.id or "signal")[:256]
    windows = _timed_prepare(predictor, settings, mne_input(x, info), name, t0, timings)
    return windows, req


@guarded
def prepare_raw_body(predictor, settings: Settings, body: bytes, query: dict[str, str], timings: dict | None = None):
    """An ``application/octet-stream`` body: the signal alone as little-endian float32, row-major [C, T] (or
    [N, C, T] with ``shape=N,C,T``). The rest comes from query parameters: ``sfreq`` and ``channel_names``
    (comma-separated) required, ``channel_types``, ``shape``, ``id`` optional. -> (ModelInputs, a v2 request)."""
    t0 = time.perf_counter()
    try:
        sfreq = float(query["sfreq"])
    except (KeyError, ValueError) as e:
        raise BadInput("query parameter sfreq (sampling rate in Hz, a number) is missing or not a number") from e
    names = as_str_list(query.get("channel_names"), "query parameter channel_names")
    if not names:
        raise BadInput("query parameter channel_names (comma-separated) is missing")
    types = as_str_list(query.get("channel_types"), "query parameter channel_types")
    if len(body) % 4:
        raise BadInput(f"an octet-stream body is float32 samples: {len(body)} bytes is not a multiple of 4")
    if "shape" in query:
        try:
            shape = [int(v) for v in query["shape"].split(",")]
        except ValueError as e:
            raise BadInput(f"query parameter shape {query['shape']!r} is not comma-separated integers") from e
    else:
        n = len(body) // 4
        if n % len(names):
            raise BadInput(f"{n} float32 values do not split into {len(names)} channels of equal length")
        shape = [len(names), n // len(names)]
    x = _binary_tensor("signal", shape, "FP32", memoryview(body))
    _check_signal_shape(settings, x)
    x = check_signal(x, "the octet-stream signal")
    info = cached_info(names, types, sfreq)
    req = InferRequest.model_construct(id=query.get("id"), parameters={"sfreq": sfreq}, inputs=[], outputs=None)
    name = str(query.get("recording") or query.get("id") or "signal")[:256]
    windows = _timed_prepare(predictor, settings, mne_input(x, info), name, t0, timings)
    return windows, req


@guarded
def prepare_json(predictor, settings: Settings, body: bytes, timings: dict | None = None):
    """A /v1 JSON recording -> (ModelInputs, the parsed RecordingJSON); ``timings`` as in `prepare_v2`."""
    t0 = time.perf_counter()
    rec = RecordingJSON.model_validate_json(body)
    x = np.asarray(rec.signal, dtype=np.float32) if rec.signal else np.zeros((0, 0), np.float32)
    if x.ndim in (2, 3) and x.shape[-2] > settings.max_channels:
        raise LimitExceeded(f"signal: {x.shape[-2]} channels exceed the limit of {settings.max_channels}")
    x = check_signal(x, "signal")
    pos = np.asarray(rec.positions, dtype=np.float64) if rec.positions is not None else None
    info = make_info(rec.channel_names, rec.channel_types, rec.sfreq, pos)
    windows = _timed_prepare(predictor, settings, mne_input(x, info), rec.name, t0, timings)
    return windows, rec


@guarded
def prepare_upload(predictor, settings: Settings, filename: str | None, fileobj: BinaryIO, space=None,
                   timings: dict | None = None):
    """An uploaded recording (any MNE format, an ``-epo.fif`` epochs file, or a zip such as BrainVision's three
    files) -> ModelInputs, opened as ``finetune predict`` opens a file (`Predictor.prepare_path`).

    The file is copied into a fresh temporary directory that is removed before this returns or raises.
    ``space``: the request's `serve.admission.Hold` on the upload disk budget (a zip's unpacked size is reserved
    there before it is unpacked). ``timings``: ``parse`` (copy, unzip, open the file) and ``preprocess``, in seconds.
    """
    t0 = time.perf_counter()
    name = safe_filename(filename)
    with request_tmpdir(settings.upload_dir) as tmp:
        target = tmp / name
        with open(target, "wb") as out:
            shutil.copyfileobj(fileobj, out, 1 << 20)
        size = target.stat().st_size
        log.info("upload received", extra={"fields": {"file": name, "bytes": size}})
        if size == 0:
            raise BadInput(f"uploaded file {name} is empty")
        if name.lower().endswith(".zip"):
            unpack_dir = tmp / "unpacked"
            unpack_dir.mkdir()
            unpack_zip(target, unpack_dir, settings.max_zip_bytes, settings.max_zip_ratio,
                       space.add if space is not None else None)
            target.unlink()
            path = find_recording(unpack_dir, name)
        else:
            path = target
        opened = []

        def limits(obj) -> None:
            opened.append(time.perf_counter())
            _check_limits(settings, obj, Path(name).name)

        windows = predictor.prepare_path(path, Path(name).name, check=limits)
        if timings is not None:
            timings.update(parse=opened[0] - t0, preprocess=time.perf_counter() - opened[0])
        return windows
