"""Request bodies -> model inputs, run on the preprocessing threads (never on the event loop).

Each function returns the predictor's `RawWindows` (items [C, T] float32 scaled units, t0_s, layout, warnings)
made by the package's own code path (`Predictor.prepare_raw` / `prepare_epochs`, as ``finetune predict``).
Errors become `ServeError`s: malformed -> 400, outside the limits or unusable data -> 422.
"""

from __future__ import annotations

import logging
import shutil
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


def _prepare(predictor, settings: Settings, obj, what: str):
    """Limits on an MNE Raw / Epochs, then the predictor's own preparation."""
    import mne

    sfreq = float(obj.info["sfreq"])
    if isinstance(obj, mne.BaseEpochs):
        duration = len(obj) * len(obj.times) / sfreq
        check_recording(settings, len(obj.ch_names), sfreq, duration, what)
        return predictor.prepare_epochs(obj, what)
    check_recording(settings, len(obj.ch_names), sfreq, obj.n_times / sfreq, what)
    return predictor.prepare_raw(obj, what)


V2_INPUTS = ("signal", "epochs", "channel_names", "channel_types", "positions", "orientations")


@guarded
def prepare_v2(predictor, settings: Settings, body: bytes):
    """A v2 infer body -> (RawWindows, the request). Inputs: signal, [channel_names, channel_types, positions]."""
    req = InferRequest.model_validate_json(body)
    tensors: dict[str, np.ndarray] = {}
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
        if inp.name in ("signal", "epochs"):
            n = int(np.prod(inp.shape)) if inp.shape else 1
            if len(inp.shape) in (2, 3) and inp.shape[-2] > settings.max_channels:
                raise LimitExceeded(f"signal: {inp.shape[-2]} channels exceed the limit of {settings.max_channels}")
            if n > settings.max_body_bytes:
                raise BadInput(f"signal shape {inp.shape} is larger than any accepted body")
        tensors[inp.name] = decode_tensor(inp.name, inp.shape, inp.datatype, inp.data)
    if ("signal" in tensors) == ("epochs" in tensors):
        raise BadInput("give exactly one of the inputs 'signal' (FP32 [C, T], one recording) and 'epochs' "
                       "(FP32 [N, C, T])")
    if "epochs" in tensors:
        tensors["signal"] = tensors.pop("epochs")
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
    info = make_info(names, types, float(sfreq), tensors.get("positions"), tensors.get("orientations"))
    name = str(params.get("recording") or req.id or "signal")[:256]
    return _prepare(predictor, settings, mne_input(x, info), name), req


@guarded
def prepare_json(predictor, settings: Settings, body: bytes):
    """A /v1 JSON recording -> (RawWindows, the parsed RecordingJSON)."""
    rec = RecordingJSON.model_validate_json(body)
    x = np.asarray(rec.signal, dtype=np.float32) if rec.signal else np.zeros((0, 0), np.float32)
    if x.ndim in (2, 3) and x.shape[-2] > settings.max_channels:
        raise LimitExceeded(f"signal: {x.shape[-2]} channels exceed the limit of {settings.max_channels}")
    x = check_signal(x, "signal")
    pos = np.asarray(rec.positions, dtype=np.float64) if rec.positions is not None else None
    info = make_info(rec.channel_names, rec.channel_types, rec.sfreq, pos)
    return _prepare(predictor, settings, mne_input(x, info), rec.name), rec


@guarded
def prepare_upload(predictor, settings: Settings, filename: str | None, fileobj: BinaryIO, space=None):
    """An uploaded recording (any MNE format, or a zip such as BrainVision's three files) -> RawWindows.

    The file is copied into a fresh temporary directory that is removed before this returns or raises.
    ``space``: the request's `serve.admission.Hold` on the upload disk budget (a zip's unpacked size is reserved
    there before it is unpacked).
    """
    from data.readers import open_raw

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
        raw = open_raw(path, preload=False)
        return _prepare(predictor, settings, raw, Path(name).name)
