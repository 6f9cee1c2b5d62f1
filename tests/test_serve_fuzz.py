"""schemathesis over the server's own OpenAPI schema (bounded): no 5xx, and every response (status code,
content type, headers, body) matches the schema. A real uvicorn server with a real fine-tuned package and API keys;
half of the generated cases use the real model name so the model routes are reached past the 404.

``bench/serve_hardening.py`` runs this file with more examples and both ways: ``BRAINFORGE_FUZZ_EXAMPLES``
(default 6 per operation), ``BRAINFORGE_FUZZ_AUTH`` (``keys``, the default, or ``none``: a server without keys,
fuzzed against its own schema, which then declares no security) and ``BRAINFORGE_FUZZ_STATS`` (a file that gets
one JSON line per case with its status)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_support import ServerThread

from serve.app import create_app
from serve.auth import add_key
from serve.settings import Settings

EXAMPLES = int(os.environ.get("BRAINFORGE_FUZZ_EXAMPLES", "6"))
WITH_KEYS = os.environ.get("BRAINFORGE_FUZZ_AUTH", "keys") != "none"
STATS = os.environ.get("BRAINFORGE_FUZZ_STATS")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(model_registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(model_registry["registry"], root / "registry")
    key, _ = add_key(root / "keys.json", "fuzz")
    uploads = root / "uploads"
    uploads.mkdir()
    settings = Settings(registry=root / "registry", api_keys=root / "keys.json" if WITH_KEYS else None, max_body_mb=2,
                        upload_dir=uploads)
    with ServerThread(settings) as srv:
        srv.key, srv.model, srv.uploads = key, model_registry["name"], uploads
        yield srv
    assert list(uploads.iterdir()) == []


# The schema does not depend on the registry's content: build it from the app itself at collection (no model,
# no torch), and send the cases to the real server. (schemathesis.pytest.from_fixture does not run under pytest 9.)
# With keys, the schema declares bearer auth (a keys file made here, at collection, for that).
_keys = Path(tempfile.mkdtemp(prefix="bf-fuzz-keys-")) / "keys.json"
add_key(_keys, "schema")
schema = schemathesis.openapi.from_dict(
    create_app(Settings(registry=Path(__file__).parent, api_keys=_keys if WITH_KEYS else None)).openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz(case, fuzz_server):
    params = case.path_parameters or {}
    if "name" in params and zlib.crc32(repr(case.body).encode() + repr(case.query).encode()) % 2 == 0:
        params["name"] = fuzz_server.model
        if "version" in params:
            params["version"] = "1"
    if case.query is not None and "model" in case.query and zlib.crc32(repr(case.body).encode()) % 2 == 0:
        case.query["model"] = fuzz_server.model
    headers = {"Authorization": f"Bearer {fuzz_server.key}"} if WITH_KEYS else {}
    response = case.call(base_url=fuzz_server.url, headers=headers, timeout=120)
    if STATS:
        with open(STATS, "a") as f:
            f.write(json.dumps({"op": f"{case.method} {case.path}", "status": response.status_code}) + "\n")
    case.validate_response(response, checks=CHECKS, headers=headers,
                           transport_kwargs={"base_url": fuzz_server.url, "headers": headers})
