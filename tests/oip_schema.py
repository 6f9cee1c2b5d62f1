"""The Open Inference Protocol (KServe v2) REST bodies as small pydantic models, written from the spec
(kserve/docs/predict-api/v2/rest_predict_v2.yaml; KServe's own `kserve.protocol.rest.v2_datamodels` has the same
shape but pulls in the whole kserve package). Strict where the spec is: parameter values are strings, numbers
or booleans; a response ``id`` is a string; a tensor's data fills its shape."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

Parameter = StrictBool | StrictInt | StrictFloat | StrictStr
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
             "BYTES"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ServerLive(_Strict):
    live: StrictBool


class ServerReady(_Strict):
    ready: StrictBool


class ServerMetadata(_Strict):
    name: StrictStr
    version: StrictStr
    extensions: list[StrictStr]


class MetadataTensor(_Strict):
    name: StrictStr
    datatype: StrictStr
    shape: list[StrictInt]
    parameters: dict[str, Parameter] | None = None

    @model_validator(mode="after")
    def _known(self):
        assert self.datatype in DATATYPES, self.datatype
        assert all(s == -1 or s >= 0 for s in self.shape), self.shape
        return self


class ModelMetadata(_Strict):
    name: StrictStr
    versions: list[StrictStr] | None = None
    platform: StrictStr
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Parameter] | None = None

    @model_validator(mode="after")
    def _unique(self):
        for tensors in (self.inputs, self.outputs):
            names = [t.name for t in tensors]
            assert len(names) == len(set(names)), names
        return self


class ModelReady(_Strict):
    name: StrictStr
    ready: StrictBool


class ResponseOutput(_Strict):
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: dict[str, Parameter] | None = None
    data: list

    @model_validator(mode="after")
    def _fills_shape(self):
        assert self.datatype in DATATYPES, self.datatype

        def flat(x):
            return [z for y in x for z in flat(y)] if isinstance(x, list) else [x]

        assert len(flat(self.data)) == math.prod(self.shape), (self.name, self.shape)
        return self


class InferenceResponse(_Strict):
    model_name: StrictStr
    model_version: StrictStr | None = None
    id: StrictStr
    parameters: dict[str, Parameter] | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(_Strict):
    error: StrictStr
