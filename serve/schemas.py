"""Request and response bodies (pydantic): Open Inference Protocol v2 and the /v1 conveniences."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Param = bool | int | float | str | list[str] | list[float] | None  # accepted in requests (lists: channel names)
Scalar = bool | int | float | str  # OIP parameter values in responses: string, number or boolean


class ErrorBody(BaseModel):
    error: str


# --- Open Inference Protocol v2 ------------------------------------------------------------------
class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Scalar] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Scalar] | None = None


class InferInput(BaseModel):
    """One input tensor; ``data`` row-major, flat or nested. With the binary tensor extension ``data`` is left out,
    ``parameters.binary_data_size`` gives the tensor's byte count, and its bytes follow the JSON header in the body."""

    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Param] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Param] | None = None


class InferRequest(BaseModel):
    """``inputs``: ``signal`` FP32 [C, T] (one recording) or ``epochs`` FP32 [N, C, T] (N epochs), SI units
    (V, T, T/m); optional ``channel_names`` BYTES [C], ``channel_types`` BYTES [C], ``positions`` and
    ``orientations`` FP32 [C, 3] (metres / unit vectors, head frame).
    ``parameters``: ``sfreq`` (Hz, required), and ``channel_names`` / ``channel_types`` as lists or
    comma-separated strings when not given as tensors."""

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Param] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=8)
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Scalar] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    """``id``: the request's, else the request id (X-Request-ID). Outputs: probabilities, labels, t0_s,
    source_index, class_labels (the model's classes, in the order of the probability columns)."""

    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Scalar] | None = None
    outputs: list[InferOutput]


# --- /v1 -----------------------------------------------------------------------------------------
class RecordingJSON(BaseModel):
    """A recording as JSON: ``signal`` [C, T] (or [N, C, T] epochs) in SI units (V, T, T/m)."""

    model_config = ConfigDict(extra="forbid")

    signal: list[list[float]] | list[list[list[float]]]
    sfreq: float = Field(gt=0, description="sampling rate in Hz")
    channel_names: list[str] = Field(min_length=1)
    channel_types: list[str] | None = Field(None, description="eeg (default), mag, grad, or any MNE type (dropped)")
    positions: list[list[float]] | None = Field(None, description="[C, 3] metres, head frame; NaN rows unknown")
    name: str = Field("recording", max_length=256)
    model: str | None = Field(None, description="/v1/tokenize: the model name")
    version: str | None = Field(None, description="/v1/tokenize: the model version (default: latest)")


class PredictResponse(BaseModel):
    model: str
    version: str
    recording: str | None = None
    labels: list[str]
    windows: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str] = []


class TokenizeResponse(BaseModel):
    model: str
    version: str
    recording: str | None = None
    shape: list[int] = Field(description="[windows, latents, frames, levels]")
    t0_s: list[float]
    tokens: list[Any]
    warnings: list[str] = []


class ModelList(BaseModel):
    models: list[dict[str, Any]]
