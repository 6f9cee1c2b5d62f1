"""The model server against a real uvicorn on a free 127.0.0.1 port, with a real fine-tuned package.

Every route, API keys, limits (413 / 422), 429 under a saturated queue, graceful shutdown, hot-added versions
and broken packages, uploads of EDF, FIF and BrainVision (zip) recordings with outputs identical to
``finetune``'s own `predict_path`, metrics, request ids, and the ``python -m serve`` process with JSON logs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_support import FIXTURES, ServerThread, brainvision_zip, eeg_signal, free_port, v2_body

from serve.auth import add_key
from serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EDF, FIF = FIXTURES / "test.edf", FIXTURES / "sample_audvis_5s_raw.fif"
LONG_EDF = FIXTURES / "test_subsecond.edf"  # 698 s, 1 channel


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(model_registry, tmp_path_factory) -> tuple[Path, str]:
    """A private copy of the session's real fine-tuned registry (tests add versions to it) and the model name."""
    root = tmp_path_factory.mktemp("serve") / "registry"
    shutil.copytree(model_registry["registry"], root)
    return root, model_registry["name"]


@pytest.fixture(scope="module")
def api_key(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    key, _ = add_key(path, "tests")
    return path, key


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def srv(registry, api_key, upload_dir):
    settings = Settings(registry=registry[0], api_keys=api_key[0], max_body_mb=8, max_duration_s=300,
                        max_channels=400, upload_dir=upload_dir, max_delay_ms=20)
    with ServerThread(settings) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv, api_key):
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {api_key[1]}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(registry):
    from finetune.package import load_model_package, resolve_version
    from finetune.predict import Predictor

    return Predictor(load_model_package(resolve_version(registry[0], registry[1])))


def _error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


def _upload(client, path: Path, name: str | None = None, url: str | None = None, **params) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post(url or f"/v1/models/{params.pop('model')}/predict", params=params or None,
                           files={"file": (name or path.name, f, "application/octet-stream")})


# --- health, auth, server metadata ------------------------------------------------------------------------
def test_health_is_open_and_everything_else_needs_a_key(srv, client, registry):
    name = registry[1]
    with httpx.Client(base_url=srv.url, timeout=30) as anon:
        assert anon.get("/v2/health/live").json() == {"live": True}
        assert anon.get("/v2/health/ready").json() == {"ready": True}
        assert anon.get(f"/v2/models/{name}/ready").json()["ready"] is True  # readiness is key-free too
        for method, path in [("GET", "/v2"), ("GET", f"/v2/models/{name}"),
                             ("POST", f"/v2/models/{name}/infer"), ("POST", f"/v1/models/{name}/predict"),
                             ("POST", "/v1/tokenize"), ("GET", "/v1/models"), ("GET", "/metrics")]:
            r = anon.request(method, path)
            _error(r, 401, "missing API key")
            assert r.headers["www-authenticate"] == "Bearer"
        _error(anon.get("/v2", headers={"Authorization": "Bearer bf_deadbeef_" + "x" * 43}), 401, "invalid")
        _error(anon.get("/v2", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)
    meta = client.get("/v2").json()
    assert meta["name"] == "brainforge" and meta["version"] and meta["extensions"] == ["binary_tensor_data"]


# --- v2 model metadata / ready ------------------------------------------------------------------------
def test_model_metadata_and_ready(client, registry, predictor):
    root, name = registry
    labels = json.loads((root / name / "1" / "labels.json").read_text())
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        meta = client.get(path).json()
        assert meta["name"] == name and "1" in meta["versions"]
        inputs = {t["name"]: t for t in meta["inputs"]}
        outputs = {t["name"]: t for t in meta["outputs"]}
        assert inputs["signal"]["datatype"] == "FP32" and inputs["signal"]["shape"] == [-1, -1]
        assert inputs["epochs"]["shape"] == [-1, -1, -1] and inputs["orientations"]["shape"] == [-1, 3]
        assert inputs["positions"]["shape"] == [-1, 3] and inputs["channel_names"]["datatype"] == "BYTES"
        assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [-1, len(labels)]
        assert outputs["class_labels"]["shape"] == [len(labels)] and meta["parameters"]["labels"] == ",".join(labels)
    assert client.get(f"/v2/models/{name}/ready").json()["ready"] is True
    assert client.get(f"/v2/models/{name}/versions/1/ready").json() == {"name": name, "version": "1", "ready": True}
    _error(client.get("/v2/models/no-such-model"), 404, "no-such-model")
    _error(client.get(f"/v2/models/{name}/versions/99/ready"), 404, "99")
    # names and versions cannot reach outside the registry (the path is sent as is, percent-encoded)
    for bad in ("/v2/models/%2e%2e/ready", "/v2/models/..%2F..%2Fetc/ready", f"/v2/models/{name}/versions/..%2F1/ready",
                "/v2/models/%2Fetc%2Fpasswd/ready", f"/v2/models/{name}/versions/%2e%2e/infer"):
        r = client.request("POST" if bad.endswith("infer") else "GET", bad, content=b"{}")
        assert r.status_code == 404, (bad, r.text)


# --- v2 infer --------------------------------------------------------------------------------------------
def test_v2_infer_recording_and_epochs(client, registry, predictor):
    name = registry[1]
    labels = predictor.labels
    x, names = eeg_signal(8, 10.0, sfreq=512.0)
    r = client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 512.0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == name and body["model_version"] == "1" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    probs = np.asarray(out["probabilities"]["data"], np.float32).reshape(out["probabilities"]["shape"])
    n_win = len(out["t0_s"]["data"])
    assert probs.shape == (n_win, len(labels)) and n_win >= 3
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert out["labels"]["data"] == [labels[i] for i in probs.argmax(1)]
    assert out["class_labels"]["data"] == labels and "class_labels" not in body["parameters"]

    # channel names/types as BYTES tensors, and positions: the same answer as names in parameters
    body2 = v2_body(x, names, 512.0)
    del body2["parameters"]["channel_names"]
    body2["inputs"] += [{"name": "channel_names", "shape": [8], "datatype": "BYTES", "data": names},
                        {"name": "channel_types", "shape": [8], "datatype": "BYTES", "data": ["eeg"] * 8}]
    r2 = client.post(f"/v2/models/{name}/versions/1/infer", json=body2)
    assert r2.status_code == 200, r2.text
    np.testing.assert_array_equal({o["name"]: o for o in r2.json()["outputs"]}["probabilities"]["data"],
                                  out["probabilities"]["data"])

    # [N, C, T]: three epochs (the input 'epochs'), each answered separately (source_index tells which)
    ep = np.stack([eeg_signal(8, 4.0, seed=s)[0] for s in range(3)])
    body3 = v2_body(ep, names, 256.0)
    body3["inputs"][0]["name"] = "epochs"
    r3 = client.post(f"/v2/models/{name}/infer", json={**body3, "outputs": [{"name": "source_index"}, {"name": "labels"}]})
    assert r3.status_code == 200, r3.text
    outs = {o["name"]: o for o in r3.json()["outputs"]}
    assert set(outs) == {"source_index", "labels"} and sorted(set(outs["source_index"]["data"])) == [0, 1, 2]


def _binary_body(x: np.ndarray, names: list[str], sfreq: float, names_binary: bool = True) -> tuple[bytes, int]:
    """An Open Inference Protocol binary-extension body: JSON header, then the signal (and channel names) bytes."""
    sig = np.ascontiguousarray(x, dtype="<f4").tobytes()
    inputs = [{"name": "signal", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(sig)}}]
    params = {"sfreq": sfreq}
    tail = sig
    if names_binary:
        enc = b"".join(len(n.encode()).to_bytes(4, "little") + n.encode() for n in names)
        inputs.append({"name": "channel_names", "shape": [len(names)], "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(enc)}})
        tail += enc
    else:
        params["channel_names"] = names
    header = json.dumps({"id": "bin-1", "inputs": inputs, "parameters": params}).encode()
    return header + tail, len(header)


def test_v2_binary_tensors_and_raw_float32_bodies_match_json(client, registry):
    """The binary tensor extension and an octet-stream body give the JSON body's answer; stages show in /metrics."""
    name = registry[1]
    url = f"/v2/models/{name}/infer"
    x, names = eeg_signal(8, 6.0)
    x = x.astype(np.float32)
    ref = client.post(url, json=v2_body(x, names, 256.0))
    assert ref.status_code == 200, ref.text
    probs = {o["name"]: o for o in ref.json()["outputs"]}["probabilities"]["data"]
    for names_binary in (True, False):
        body, hl = _binary_body(x, names, 256.0, names_binary)
        r = client.post(url, content=body, headers={"Inference-Header-Content-Length": str(hl),
                                                    "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "bin-1"
        np.testing.assert_allclose({o["name"]: o for o in r.json()["outputs"]}["probabilities"]["data"], probs, atol=1e-6)
    r = client.post(url, content=x.astype("<f4").tobytes(), params={"sfreq": "256", "channel_names": ",".join(names), "id": "raw-1"},
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "raw-1"
    np.testing.assert_allclose({o["name"]: o for o in r.json()["outputs"]}["probabilities"]["data"], probs, atol=1e-6)
    # what is wrong with a binary body is said
    body, hl = _binary_body(x, names, 256.0)
    _error(client.post(url, content=body[:-3], headers={"Inference-Header-Content-Length": str(hl)}), 400, "binary_data_size")
    _error(client.post(url, content=body + b"xx", headers={"Inference-Header-Content-Length": str(hl)}), 400, "not claimed")
    _error(client.post(url, content=body, headers={"Inference-Header-Content-Length": str(len(body) + 1)}), 400,
           "Inference-Header-Content-Length")
    _error(client.post(url, content=body[:hl], headers={"Content-Type": "application/json"}), 400, "binary_data_size")
    _error(client.post(url, content=b"\0" * 30, params={"sfreq": "256", "channel_names": "Cz"},
                       headers={"Content-Type": "application/octet-stream"}), 400, "multiple of 4")
    _error(client.post(url, content=b"\0" * 36, params={"channel_names": "Cz,Pz"},
                       headers={"Content-Type": "application/octet-stream"}), 400, "sfreq")
    text = client.get("/metrics").text
    for stage in ("parse", "preprocess", "queue_wait", "forward"):
        assert f'brainforge_stage_seconds_count{{model="{name}",stage="{stage}",version="1"}}' in text, stage


def test_v2_request_path_gives_the_model_inputs_of_a_raw_array(registry, predictor):
    """Issue 14: a request's signal is preprocessed from the array itself (`ArrayRecording`, a cached Info and
    layout, no RawArray), into exactly the model inputs `Predictor.prepare` makes of it as an `mne.io.RawArray`,
    request after request."""
    import mne

    from serve.pipeline import prepare_raw_body, prepare_v2

    x, names = eeg_signal(32, 10.0)
    body, header_length = _binary_body(x, names, 256.0)
    settings = Settings(registry=registry[0])
    raw = mne.io.RawArray(x.astype(np.float64), mne.create_info(names, 256.0, "eeg"), verbose="error")
    want = predictor.prepare(raw, "bin-1")
    query = {"sfreq": "256", "channel_names": ",".join(names), "id": "bin-1"}
    for got in (prepare_v2(predictor, settings, body, header_length)[0],  # the second one takes the caches
                prepare_v2(predictor, settings, body, header_length)[0],
                prepare_raw_body(predictor, settings, x.astype("<f4").tobytes(), query)[0]):
        assert got.warnings == want.warnings and got.layout.names == want.layout.names
        np.testing.assert_array_equal(got.t0_s, want.t0_s)
        for a, b in zip(got.items, want.items, strict=True):
            assert a["channels"] == b["channels"] and a["recording"] == b["recording"]
            for k in ("signal", "types", "positions", "orientations"):
                np.testing.assert_array_equal(a[k], b[k])


def test_v2_infer_bad_requests_say_what_is_wrong(client, registry):
    url = f"/v2/models/{registry[1]}/infer"
    x, names = eeg_signal(4, 4.0)
    ok = v2_body(x, names, 256.0)
    _error(client.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid request body")
    _error(client.post(url, json={**ok, "parameters": {"channel_names": names}}), 400, "sfreq")
    _error(client.post(url, json={**ok, "parameters": {"sfreq": 256}}), 400, "channel names are missing")
    _error(client.post(url, json={**ok, "parameters": {"sfreq": 256, "channel_names": names[:3]}}), 400, "3 channel names")
    _error(client.post(url, json={**ok, "parameters": {"sfreq": 256, "channel_names": ["Cz"] * 4}}), 400, "duplicates")
    _error(client.post(url, json={**ok, "parameters": {"sfreq": 256, "channel_names": names, "channel_types": ["eeg", "eeg", "eeg", "fnirs"]}}),
           400, "unknown channel type 'fnirs'")
    bad = json.loads(json.dumps(ok))
    bad["inputs"][0]["shape"] = [4, 999]
    _error(client.post(url, json=bad), 400, "do not fill shape")
    bad["inputs"][0] = {**ok["inputs"][0], "datatype": "INT8"}
    _error(client.post(url, json=bad), 400, "must be FP32")
    _error(client.post(url, json={**ok, "inputs": [{**ok["inputs"][0], "name": "eeg"}]}), 400, "unknown input 'eeg'")
    _error(client.post(url, json={**ok, "outputs": [{"name": "nope"}]}), 400, "unknown requested outputs")


# --- uploads: EDF, FIF, BrainVision zip, -epo.fif -- identical to finetune's predict_path -----------------
def test_uploads_match_finetune_predict(client, registry, predictor, tmp_path, upload_dir):
    import mne

    from data.readers import open_raw
    from finetune.predict import predict_path

    name = registry[1]
    bv_zip, bv_vhdr = brainvision_zip(tmp_path)
    epo = tmp_path / "rec-epo.fif"  # an epochs file: `finetune predict` reads it, so must the server
    mne.make_fixed_length_epochs(open_raw(FIF, preload=True), duration=2.5, verbose="error").save(epo, verbose="error")
    cases = [(EDF, EDF), (FIF, FIF), (bv_zip, bv_vhdr), (epo, epo)]
    with ThreadPoolExecutor(3) as pool:  # concurrent: the three land in shared, padded batches
        answers = list(pool.map(lambda c: _upload(client, c[0], model=name), cases))
    for (sent, local), r in zip(cases, answers, strict=True):
        assert r.status_code == 200, (sent.name, r.text)
        got = r.json()
        want = predict_path(predictor, local).to_dict()
        assert got["model"] == name and got["version"] == "1" and got["labels"] == want["labels"]
        assert len(got["windows"]) == len(want["windows"]) > 0, sent.name
        for g, w in zip(got["windows"], want["windows"], strict=True):
            assert (g["t0_s"], g["t1_s"], g["label"]) == (w["t0_s"], w["t1_s"], w["label"])
            np.testing.assert_allclose(list(g["probabilities"].values()), list(w["probabilities"].values()), atol=2e-6)
        assert got["summary"]["label"] == want["summary"]["label"]
        assert got["summary"]["n_windows"] == want["summary"]["n_windows"]
    assert list(upload_dir.iterdir()) == []  # every per-request folder is gone


def test_json_recording_and_tokenize(client, registry, predictor):
    from data.readers import open_raw

    name = registry[1]
    x, names = eeg_signal(6, 8.0)
    rec = {"signal": x.tolist(), "sfreq": 256.0, "channel_names": names, "name": "json-rec"}
    r = client.post(f"/v1/models/{name}/predict", json=rec)
    assert r.status_code == 200, r.text
    v2 = client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 256.0)).json()
    v2_probs = np.asarray({o["name"]: o for o in v2["outputs"]}["probabilities"]["data"]).reshape(-1, len(predictor.labels))
    np.testing.assert_allclose([list(w["probabilities"].values()) for w in r.json()["windows"]], v2_probs, atol=2e-6)

    with open(EDF, "rb") as f:
        t = client.post("/v1/tokenize", params={"model": name}, files={"file": ("test.edf", f)})
    assert t.status_code == 200, t.text
    tok = t.json()
    want = predictor.tokenize_items(predictor.prepare_raw(open_raw(EDF), str(EDF)).items)
    assert tok["shape"] == list(want.shape) and len(want.shape) == 4
    np.testing.assert_array_equal(np.asarray(tok["tokens"]), want)
    t2 = client.post("/v1/tokenize", json={**rec, "model": name, "version": "1"})
    assert t2.status_code == 200 and t2.json()["shape"][0] == len(r.json()["windows"])
    _error(client.post("/v1/tokenize", json=rec), 400, "model")
    _error(client.post(f"/v1/models/{name}/predict", content=b"x", headers={"content-type": "text/plain"}), 415)
    _error(client.post(f"/v1/models/{name}/predict", files={"other": ("a.edf", b"123")}), 400, "'file'")


# --- limits -----------------------------------------------------------------------------------------------
def _raw_http(url: str, head: bytes, chunks=()) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        try:
            for c in chunks:
                s.sendall(c)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + 10:
            part = s.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_limits(srv, client, registry, api_key, tmp_path, upload_dir):
    name = registry[1]
    auth = f"Authorization: Bearer {api_key[1]}\r\n".encode()
    # 413 from Content-Length alone, before any body byte is read
    status, body = _raw_http(srv.url, b"POST /v1/models/" + name.encode() + b"/predict HTTP/1.1\r\nHost: x\r\n" + auth +
                             b"Content-Type: application/json\r\nContent-Length: 9000000\r\n\r\n")
    assert status == 413 and b"exceeds the 8 MB limit" in body
    # 413 from the streamed byte count (chunked: no Content-Length)
    chunk = b"a" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 140 + [b"0\r\n\r\n"]  # 9.2 MB
    status, body = _raw_http(srv.url, b"POST /v2/models/" + name.encode() + b"/infer HTTP/1.1\r\nHost: x\r\n" + auth +
                             b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413 and b"streamed" in body
    # 422: duration, channels, sampling rate; each says why
    _error(_upload(client, LONG_EDF, model=name), 422, "exceed the limit of 300 s")
    x, names = eeg_signal(401, 2.0)
    _error(client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 256.0)), 422, "401 channels exceed the limit of 400")
    x, names = eeg_signal(4, 4.0)
    _error(client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 32.0)), 422, "32 Hz is outside the accepted range")
    _error(client.post(f"/v1/models/{name}/predict", json={"signal": x.tolist(), "sfreq": 50000, "channel_names": names}),
           422, "50000 Hz is outside")
    # unusable uploads: 422 naming the file; zip members cannot escape (400)
    garbage = tmp_path / "broken.edf"
    garbage.write_bytes(b"0       this is not an EDF file" * 20)
    _error(_upload(client, garbage, model=name), 422, "broken.edf")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil.vhdr", "x")
    _error(_upload(client, evil, model=name), 400, "zip member '../evil.vhdr'")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("notes.txt", "no recording here")
    r = client.post(f"/v1/models/{name}/predict", files={"file": ("notes.zip", empty.getvalue())})
    _error(r, 422, "no readable recording")
    assert list(upload_dir.iterdir()) == []  # removed after errors too


# --- metrics and request ids --------------------------------------------------------------------------
def test_metrics_and_request_ids(client, registry):
    name = registry[1]
    r = client.get(f"/v2/models/{name}/ready", headers={"X-Request-ID": "trace-abc.123"})
    assert r.headers["x-request-id"] == "trace-abc.123"
    generated = client.get("/v2/health/live").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/v2/health/live", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"] != "bad id"
    x, names = eeg_signal(4, 4.0)
    assert client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 256.0)).status_code == 200
    client.get("/no/such/route")
    text = client.get("/metrics").text
    assert f'brainforge_requests_total{{method="POST",model="{name}",route="/v2/models/{{name}}/infer",status="200"}}' in text
    assert 'route="unmatched",status="404"' in text
    assert f'brainforge_request_duration_seconds_bucket{{le="0.5",method="POST",model="{name}",route="/v2/models/{{name}}/infer",status="200"}}' in text
    assert f'brainforge_batch_size_count{{model="{name}",version="1"}}' in text
    assert f'brainforge_queue_depth{{model="{name}",version="1"}} 0.0' in text
    assert "process_resident_memory_bytes" in text and "python_gc_objects_collected_total" in text  # default collectors


# --- hot reload ---------------------------------------------------------------------------------------
def _publish(src: Path, dest: Path) -> None:
    """Copy a version folder in atomically (as finetune's exporter does: hidden folder, then rename)."""
    tmp = dest.parent / f".partial-{dest.name}"
    shutil.copytree(src, tmp)
    os.rename(tmp, dest)


def test_hot_added_versions_and_broken_packages(client, registry):
    root, name = registry
    _publish(root / name / "1", root / name / "2")
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["versions"] == ["1", "2"] and meta["parameters"]["version"] == "2"
    x, names = eeg_signal(4, 4.0)
    r = client.post(f"/v2/models/{name}/versions/2/infer", json=v2_body(x, names, 256.0))
    assert r.status_code == 200 and r.json()["model_version"] == "2"
    assert client.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 256.0)).json()["model_version"] == "2"

    (root / "broken").mkdir()
    _publish(root / name / "1", root / "broken" / "1")
    weights = root / "broken" / "1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed[name]["versions"] == ["1", "2"] and "broken" in listed
    _error(client.get("/v2/models/broken/ready"), 409, "model.safetensors")
    _error(client.post("/v2/models/broken/infer", json=v2_body(x, names, 256.0)), 409, "not ready")
    assert client.get(f"/v2/models/{name}/ready").status_code == 200  # the server stays up
    _error(client.get("/v2/health/ready"), 409, "broken")  # ready means every model is ready
    shutil.copy(root / name / "1" / "model.safetensors", weights)  # repaired in place: picked up again
    assert client.get("/v2/models/broken/ready").json()["ready"] is True
    assert client.get("/v2/health/ready").json() == {"ready": True}


# --- saturated queue and graceful shutdown ------------------------------------------------------------
def test_queue_full_429_then_graceful_shutdown(registry, tmp_path):
    root, name = registry
    settings = Settings(registry=root, max_queue=1, max_batch=1, max_delay_ms=0, upload_dir=tmp_path)
    srv = ServerThread(settings).start()
    result: dict = {}

    def slow_request():
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            result["r"] = _upload(c, LONG_EDF, model=name)  # 698 s: the longest bundled recording

    t = threading.Thread(target=slow_request)
    t.start()
    deadline = time.monotonic() + 60
    while not any(m.batcher.depth for m in srv.app.state.registry.loaded()):
        assert time.monotonic() < deadline and t.is_alive(), "the slow request never got admitted"
        time.sleep(0.002)
    x, names = eeg_signal(4, 4.0)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post(f"/v2/models/{name}/infer", json=v2_body(x, names, 256.0))
    _error(r, 429, "queued")
    assert int(r.headers["retry-after"]) >= 1
    assert t.is_alive(), "the slow request finished before the shutdown began; the test proves nothing"
    srv.stop()  # as SIGTERM: stop accepting, finish the in-flight request, drain the batcher
    t.join(60)
    assert result["r"].status_code == 200 and result["r"].json()["summary"]["n_windows"] > 100
    assert not srv.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/v2/health/live", timeout=5)


# --- the real command: python -m serve ------------------------------------------------------------------
def test_cli_server_json_logs_key_revocation_and_sigterm(registry, tmp_path):
    root = registry[0]
    keys = tmp_path / "keys.json"
    add = subprocess.run([sys.executable, "-m", "serve", "keys", "add", "--file", str(keys), "--name", "cli"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    key = add.stdout.strip()
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "BRAINFORGE_MAX_BATCH": "8"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serve", "--registry", str(root), "--port", str(port),
                                 "--api-keys", str(keys), "--no-preload"], stderr=log, stdout=log, cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        h = {"Authorization": f"Bearer {key}", "X-Request-ID": "cli-rid-1"}
        r = httpx.get(f"{url}/v2", headers=h, timeout=60)  # needs a key, loads no model: a quick start
        assert r.status_code == 200 and r.headers["x-request-id"] == "cli-rid-1"
        revoke = subprocess.run([sys.executable, "-m", "serve", "keys", "revoke", "--file", str(keys), key.split("_")[1]],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert revoke.returncode == 0, revoke.stderr
        _error(httpx.get(f"{url}/v2", headers=h, timeout=60), 401, "revoked")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # graceful shutdown, then a clean exit
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()]  # every line is JSON
    access = [ln for ln in lines if ln.get("request_id") == "cli-rid-1" and ln["msg"] == "request"]
    assert sorted((a["route"], a["status"], a["key_id"]) for a in access) == [("/v2", 200, key.split("_")[1]),
                                                                             ("/v2", 401, None)]  # the key's id, never the key
    assert any(ln["msg"] == "shutdown complete" for ln in lines)
    assert key not in log_path.read_text() and key.split("_", 2)[2] not in log_path.read_text()
