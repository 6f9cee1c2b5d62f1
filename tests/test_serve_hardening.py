"""Hardening of the server (issue 13), against a real uvicorn on 127.0.0.1 with the session's fine-tuned package:
admission before reading (404 / 413 / 429 without reading the body), a JSON limit apart from the upload limit, a
server-wide memory budget, fast key checks with a per-client limit on failures, zip bombs refused before
unpacking, truncated recordings refused, client errors without server paths or tracebacks, request ids in the
preprocessing log lines, stale upload folders swept at start-up, OIP conformance (tests/oip_schema.py), and the
settings-derived CLI, health command and network-bind rule."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from oip_schema import (
    ErrorResponse,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from serve_support import FIXTURES, ServerThread, eeg_signal, free_port, v2_body

from serve.admission import JSON_MEMORY_FACTOR
from serve.auth import KeyStore, add_key
from serve.errors import PayloadTooLarge
from serve.inputs import unpack_zip
from serve.observability import request_id_var
from serve.settings import Settings


@pytest.fixture(scope="module")
def hsrv(model_registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    key, _ = add_key(root / "keys.json", "hardening")
    uploads = root / "uploads"
    uploads.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = uploads / f"brainforge-upload-{dead.pid}-abc123"  # left by a server killed with -9 mid-upload
    stale.mkdir()
    (stale / "recording.edf").write_bytes(b"0" * 4096)
    settings = Settings(registry=model_registry["registry"], api_keys=root / "keys.json", upload_dir=uploads,
                        max_body_mb=8, max_json_mb=1, max_inflight_mb=3, max_key_failures=5, key_failure_delay_s=0.3,
                        max_delay_ms=5)
    with ServerThread(settings) as s:
        s.key, s.model, s.uploads, s.stale, s.keys_file = key, model_registry["name"], uploads, stale, root / "keys.json"
        yield s


@pytest.fixture(scope="module")
def hclient(hsrv):
    with httpx.Client(base_url=hsrv.url, headers={"Authorization": f"Bearer {hsrv.key}"}, timeout=120) as c:
        yield c


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def _response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, headers, body of one response (Content-Length framed), read within the socket's timeout: a
    server that waits for the request body before answering makes this raise TimeoutError."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    while len(body) < int(headers.get("content-length", 0)):
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), headers, body


def _head(method: str, path: str, key: str, ctype: str, length: int, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


# --- 9: start-up ---------------------------------------------------------------------------------------------
def test_upload_folders_of_a_killed_server_are_swept_at_startup(hsrv):
    assert not hsrv.stale.exists()


# --- 4 and 1: admission before reading -------------------------------------------------------------------------
def test_upload_to_an_unknown_model_is_answered_before_the_body_is_read(hsrv):
    with _connect(hsrv.url) as s:  # 5 MB announced, not a byte sent: the answer must not wait for them
        s.sendall(_head("POST", "/v1/models/no-such-model/predict", hsrv.key, "multipart/form-data; boundary=xyz",
                        5_000_000))
        status, _, body = _response(s)
    assert status == 404 and b"no-such-model" in body


def test_json_bodies_have_their_own_limit_checked_before_reading(hsrv, hclient, tmp_path):
    with _connect(hsrv.url) as s:  # 2 MB of JSON: over the 1 MB JSON limit, under the 8 MB upload limit
        s.sendall(_head("POST", f"/v2/models/{hsrv.model}/infer", hsrv.key, "application/json", 2_000_000))
        status, _, body = _response(s)
    assert status == 413 and b"JSON body of 2000000 bytes exceeds the 1 MB limit" in body
    big = tmp_path / "big.edf"  # a 2 MB upload is within the upload limit (and then unusable: 422, not 413)
    big.write_bytes(b"0       not an EDF" + b"\0" * 2_000_000)
    r = hclient.post(f"/v1/models/{hsrv.model}/predict", files={"file": ("big.edf", big.read_bytes())})
    assert r.status_code == 422, r.text


def test_json_bodies_beyond_the_memory_budget_get_429_instead_of_growing(hsrv, hclient):
    budget = hsrv.app.state.budgets["memory"]
    x, names = eeg_signal(8, 6.0)
    body = json.dumps(v2_body(x, names, 256.0)).encode()
    # alone it fits the 3 MB budget (10x its size), beside the slow one below it does not
    assert budget.total - 250_000 * JSON_MEMORY_FACTOR < len(body) * JSON_MEMORY_FACTOR < budget.total
    with _connect(hsrv.url) as s:  # a slow client holding 250 kB x 10 of the budget while it sends
        s.sendall(_head("POST", f"/v2/models/{hsrv.model}/infer", hsrv.key, "application/json", 250_000) + b"{")
        deadline = time.monotonic() + 30
        while budget.used < 250_000 * JSON_MEMORY_FACTOR:
            assert time.monotonic() < deadline, "the slow request never reserved its bytes"
            time.sleep(0.01)
        r = hclient.post(f"/v2/models/{hsrv.model}/infer", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert "memory budget" in r.json()["error"]
        s.sendall(b" " * (250_000 - 1))
        status, _, _ = _response(s)
        assert status == 400  # "{" and spaces: not a request, and now answered
    assert budget.used == 0
    r = hclient.post(f"/v2/models/{hsrv.model}/infer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


# --- 2: keys --------------------------------------------------------------------------------------------------
def test_wrong_secrets_are_cheap_to_refuse_and_limited_per_client(hsrv, hclient):
    store = KeyStore(hsrv.keys_file)
    key_id = hsrv.key.split("_")[1]
    wrong = f"bf_{key_id}_" + "x" * 43  # a known key id with a wrong secret
    t0 = time.perf_counter()
    assert all(store.verify(wrong) is None for _ in range(200))
    assert time.perf_counter() - t0 < 1.0  # scrypt took about 50 ms per check, under one global lock
    assert store.verify(hsrv.key) == key_id
    assert "scrypt" not in hsrv.keys_file.read_text()
    with httpx.Client(base_url=hsrv.url, timeout=30) as anon:
        statuses = [anon.get("/v2", headers={"Authorization": f"Bearer {wrong}"}).status_code for _ in range(5)]
        assert statuses == [401] * 5
        t0 = time.perf_counter()
        r = anon.get("/v2", headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "failed API key checks" in r.text
        assert time.perf_counter() - t0 >= 0.3  # tarpitted: a flood slows itself down
    assert hclient.get("/v2").status_code == 200  # the valid key from the same client is never refused


# --- 3: zip bombs ---------------------------------------------------------------------------------------------
def _bomb(mb: int = 40) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("recording/test.vhdr", b"Brain Vision Data Exchange Header File Version 1.0\n")
        zf.writestr("recording/test.eeg", b"\0" * (mb << 20))
    return buf.getvalue()


def test_zip_bombs_are_refused_before_anything_is_unpacked(hsrv, hclient, tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_bomb())
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PayloadTooLarge, match="zip bomb"):
        unpack_zip(archive, out, max_bytes=1 << 30, max_ratio=100)
    assert list(out.rglob("*")) == []
    reserved = []
    with pytest.raises(PayloadTooLarge, match="declares"):  # declared sizes over the limit: nothing reserved or written
        unpack_zip(archive, out, max_bytes=10 << 20, max_ratio=None, reserve=lambda n, what: reserved.append(n))
    assert reserved == [] and list(out.rglob("*")) == []
    r = hclient.post(f"/v1/models/{hsrv.model}/predict", files={"file": ("bomb.zip", archive.read_bytes())})
    assert r.status_code == 413 and "zip bomb" in r.json()["error"], r.text
    assert list(hsrv.uploads.iterdir()) == [] and hsrv.app.state.budgets["disk"].used == 0


# --- 6, 7, 8: truncated uploads, messages without paths, request ids in the preprocessing log ----------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {}) or {}
        self.seen.append((request_id_var.get(), f"{record.getMessage()} {fields}"))


def test_truncated_upload_is_422_naming_the_file_not_the_server_path(hsrv, hclient, tmp_path):
    data = (FIXTURES / "test.edf").read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: len(data) * 2 // 3])  # 6 records declared, 3.x present
    handler, logger = _Records(), logging.getLogger("brainforge")  # data stage and server, on the prep thread
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        r = hclient.post(f"/v1/models/{hsrv.model}/predict", files={"file": ("cut.edf", cut.read_bytes())},
                         headers={"X-Request-ID": "trunc-rid-1"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert r.status_code == 422, r.text
    error = ErrorResponse.model_validate_json(r.content).error
    assert "cut.edf" in error and "truncated" in error and "6 data records" in error
    assert str(hsrv.uploads) not in error and "brainforge-upload" not in error and "/" not in error.split("cut.edf")[0]
    lines = [(rid, msg) for rid, msg in handler.seen if "cut.edf" in msg]
    assert any("upload received" in msg for _, msg in lines) and any(str(hsrv.uploads) in msg for _, msg in lines)
    assert all(rid == "trunc-rid-1" for rid, _ in lines), handler.seen  # the log keeps the path, with the request id


def test_unreadable_upload_error_has_no_traceback_or_paths(hsrv, hclient):
    rng = np.random.default_rng(0)
    r = hclient.post(f"/v1/models/{hsrv.model}/predict", files={"file": ("random.cnt", rng.bytes(20_000))})
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert "random.cnt" in error
    for leak in ("Traceback", 'File "', str(hsrv.uploads), "brainforge-upload", "site-packages", "/tmp/"):
        assert leak not in error, error


# --- 13, 15, 16: OIP conformance ------------------------------------------------------------------------------
def test_responses_conform_to_the_open_inference_protocol(hsrv, hclient):
    m = hsrv.model
    with httpx.Client(base_url=hsrv.url, timeout=30) as anon:  # health and readiness need no key
        ServerLive.model_validate_json(anon.get("/v2/health/live").content)
        ServerReady.model_validate_json(anon.get("/v2/health/ready").content)
        for path in (f"/v2/models/{m}/ready", f"/v2/models/{m}/versions/1/ready"):
            r = anon.get(path)
            assert r.status_code == 200 and ModelReady.model_validate_json(r.content).ready is True
    ServerMetadata.model_validate_json(hclient.get("/v2").content)
    meta = ModelMetadata.model_validate_json(hclient.get(f"/v2/models/{m}").content)
    inputs = {t.name: t for t in meta.inputs}
    assert inputs["signal"].shape == [-1, -1] and inputs["epochs"].shape == [-1, -1, -1] and "orientations" in inputs
    labels = meta.parameters["labels"].split(",")

    x, names = eeg_signal(4, 4.0)
    body = v2_body(x, names, 256.0)
    del body["id"]
    r = hclient.post(f"/v2/models/{m}/infer", json=body, headers={"X-Request-ID": "oip-rid-1"})
    resp = InferenceResponse.model_validate_json(r.content)
    assert resp.id == "oip-rid-1"  # no id in the request: the request id, never null
    outs = {o.name: o for o in resp.outputs}
    assert outs["class_labels"].data == labels and outs["class_labels"].datatype == "BYTES"
    assert all(o.name in {t.name for t in meta.outputs} for o in resp.outputs)

    # what is declared is what is accepted: [C, T] as signal, [N, C, T] as epochs, orientations
    ep = np.stack([x, x])
    bad = v2_body(ep, names, 256.0)
    bad["inputs"][0]["name"] = "signal"  # a 3-D signal: v2_body itself names [N, C, T] 'epochs'
    r = hclient.post(f"/v2/models/{m}/infer", json=bad)
    assert r.status_code == 400 and "'epochs'" in ErrorResponse.model_validate_json(r.content).error
    bad["inputs"][0]["name"] = "epochs"
    bad["inputs"].append({"name": "orientations", "shape": [4, 3], "datatype": "FP32", "data": [0.0, 0.0, 1.0] * 4})
    InferenceResponse.model_validate_json(hclient.post(f"/v2/models/{m}/infer", json=bad).content)


# --- 11, 12, 19, 20: schema, network bind, CLI flags, health command, device fallback --------------------------
def test_openapi_declares_bearer_auth_only_with_keys(model_registry, hsrv):
    from serve.app import create_app

    anon = create_app(Settings(registry=model_registry["registry"])).openapi()
    assert "securitySchemes" not in anon.get("components", {})
    assert not any("security" in op for item in anon["paths"].values() for op in item.values())
    keyed = httpx.get(f"{hsrv.url}/openapi.json", timeout=30).json()
    assert "HTTPBearer" in keyed["components"]["securitySchemes"]
    assert any("security" in op for op in keyed["paths"]["/v2"].values())


def test_non_loopback_bind_needs_keys_or_allow_anonymous(tmp_path):
    with pytest.raises(ValueError, match="--allow-anonymous"):
        Settings(registry=tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match="--allow-anonymous"):
        Settings(registry=tmp_path, host="192.168.1.5")
    assert Settings(registry=tmp_path, host="0.0.0.0", allow_anonymous=True).host == "0.0.0.0"
    add_key(tmp_path / "keys.json", "k")
    assert Settings(registry=tmp_path, host="0.0.0.0", api_keys=tmp_path / "keys.json").api_keys
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert Settings(registry=tmp_path, host=host).host == host
    p = subprocess.run([sys.executable, "-m", "serve", "--registry", str(tmp_path), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode != 0 and "--allow-anonymous" in p.stderr


def test_every_setting_is_a_flag_and_the_registry_is_required(monkeypatch, tmp_path):
    from serve.__main__ import _server_parser, _settings_from

    monkeypatch.delenv("BRAINFORGE_REGISTRY", raising=False)
    parser = _server_parser()
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == set(Settings.model_fields)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --registry is required (no BRAINFORGE_REGISTRY)
    args = parser.parse_args(["--registry", str(tmp_path), "--device", "cpu", "--max-zip-mb", "5",
                              "--rescan-interval-s", "3", "--no-preload", "--max-json-mb", "2"])
    s = _settings_from(args)
    assert (s.device, s.max_zip_mb, s.rescan_interval_s, s.preload, s.max_json_mb) == ("cpu", 5.0, 3.0, False, 2.0)
    monkeypatch.setenv("BRAINFORGE_REGISTRY", str(tmp_path))
    assert _server_parser().parse_args([]).registry is None  # then the environment gives it


def test_health_command_reads_the_port_from_the_environment(hsrv, monkeypatch):
    from serve.__main__ import main

    monkeypatch.setenv("BRAINFORGE_PORT", hsrv.url.rsplit(":", 1)[1])
    assert main(["health"]) == 0
    monkeypatch.setenv("BRAINFORGE_PORT", str(free_port()))
    assert main(["health", "--timeout", "2"]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_gpu_image_device_auto_falls_back_to_the_cpu(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="brainforge.serve"):
        assert Settings(registry=tmp_path, device="auto").device == "cpu"
    assert "--gpus" in caplog.text
    with pytest.raises(ValueError, match="--gpus all"):
        Settings(registry=tmp_path, device="cuda")
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (Path(__file__).resolve().parents[1] / "docker" / name).read_text()
        env = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        assert not any("BRAINFORGE_DEVICE=cuda" in ln or "127.0.0.1:8000" in ln for ln in env)
