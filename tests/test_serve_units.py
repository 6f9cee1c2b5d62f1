"""Serving parts that need no model: settings, API keys (library and CLI), zip checks, the dynamic batcher,
the Docker files (statically: no engine runs here)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from serve.auth import KeyStore, add_key, read_keys, revoke_key
from serve.batching import DynamicBatcher
from serve.errors import BadInput, PayloadTooLarge, QueueFull
from serve.inputs import safe_filename, unpack_zip
from serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


# --- settings ---------------------------------------------------------------------------------------
def test_settings_from_env_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINFORGE_REGISTRY", str(tmp_path))
    monkeypatch.setenv("BRAINFORGE_MAX_BATCH", "7")
    monkeypatch.setenv("BRAINFORGE_PORT", "9123")
    s = Settings()
    assert (s.registry, s.max_batch, s.port, s.max_delay_ms) == (tmp_path.resolve(), 7, 9123, 10.0)
    assert Settings(max_batch=3).max_batch == 3  # explicit values (the CLI flags) override the environment
    with pytest.raises(ValueError, match="is not a directory"):
        Settings(registry=tmp_path / "missing")
    with pytest.raises(ValueError, match="min_sfreq"):
        Settings(min_sfreq=500, max_sfreq=100)
    with pytest.raises(ValueError, match="'cpu' or 'cuda' only"):
        Settings(device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Settings(device="cuda")


def test_server_keeps_idle_connections_longer_than_clients_do(tmp_path):
    """uvicorn's default 5 s keep-alive equals httpx's pool expiry: a client could send on a connection the server
    was closing (the soak's ReadErrors). The server's keep-alive comes from the settings, 30 s by default."""
    from serve.server import make_server

    assert make_server(Settings(registry=tmp_path), configure_logging=False).config.timeout_keep_alive == 30
    assert make_server(Settings(registry=tmp_path, keep_alive_s=12), configure_logging=False).config.timeout_keep_alive == 12


def test_cli_reports_bad_settings(tmp_path):
    p = subprocess.run([sys.executable, "-m", "serve", "--registry", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode != 0 and "is not a directory" in p.stderr


# --- API keys ---------------------------------------------------------------------------------------
def test_keys_are_salted_hashes_and_revocable(tmp_path):
    path = tmp_path / "keys.json"
    key1, e1 = add_key(path, "lab")
    key2, _ = add_key(path, "clinic")
    text = path.read_text()
    assert key1 not in text and key1.split("_", 2)[2] not in text  # only id, salt and hash are stored
    assert path.stat().st_mode & 0o077 == 0
    entries = read_keys(path)
    assert len({e.salt for e in entries}) == 2
    store = KeyStore(path)
    assert store.verify(key1) == e1.id and store.verify(key2) is not None
    assert store.verify(key1[:-1] + ("A" if key1[-1] != "A" else "B")) is None
    assert store.verify("bf_00000000_" + "x" * 43) is None and store.verify("garbage") is None
    time.sleep(0.01)
    revoke_key(path, e1.id)
    assert store.verify(key1) is None  # the store notices the file changed, even for a cached key
    assert store.verify(key2) is not None


def test_keys_cli_prints_key_once(tmp_path):
    path = tmp_path / "keys.json"
    run = lambda *a: subprocess.run([sys.executable, "-m", "serve", "keys", *a, "--file", str(path)],  # noqa: E731
                                    capture_output=True, text=True, timeout=60, cwd=ROOT)
    added = run("add", "--name", "pipeline")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("bf_") and KeyStore(path).verify(key)
    listed = run("list")
    assert "pipeline" in listed.stdout and "active" in listed.stdout and key not in listed.stdout
    key_id = key.split("_")[1]
    assert run("revoke", key_id).returncode == 0
    assert "revoked" in run("list").stdout and KeyStore(path).verify(key) is None
    missing = run("revoke", "nobody")
    assert missing.returncode == 1 and "0 active keys match" in missing.stderr


# --- uploads ----------------------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("member", ["../evil.vhdr", "/etc/evil.vhdr", "a/../../evil.eeg", "C:/evil.eeg", "..\\evil.eeg"])
def test_zip_members_cannot_escape(tmp_path, member):
    archive = _zip(tmp_path / "x.zip", {"ok.txt": b"1", member: b"2"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadInput, match="zip member"):
        unpack_zip(archive, out, 1 << 20)
    assert not (tmp_path / "evil.vhdr").exists() and not (tmp_path / "evil.eeg").exists()


def test_zip_size_counted_while_unpacking(tmp_path):
    archive = _zip(tmp_path / "x.zip", {"big.eeg": b"\0" * 300_000})
    with pytest.raises(PayloadTooLarge, match="declares 0.3 MB unpacked"):  # from the declared size: nothing unpacked
        unpack_zip(archive, tmp_path, 100_000)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BadInput, match="not a valid zip"):
        unpack_zip(bad, tmp_path, 1 << 20)


def test_safe_filename():
    assert safe_filename("../../etc/passwd.edf") == "passwd.edf"
    assert safe_filename("C:\\data\\rec one.vhdr") == "rec_one.vhdr"
    with pytest.raises(BadInput):
        safe_filename("..")


# --- dynamic batching -------------------------------------------------------------------------------
def _double(calls: list[int]):
    def fn(items: list[dict]) -> np.ndarray:
        calls.append(len(items))
        time.sleep(0.02)
        return np.array([[it["x"], 2 * it["x"]] for it in items], dtype=np.float32)

    return fn


def _items(start: int, n: int) -> list[dict]:
    return [{"x": float(start + i)} for i in range(n)]


def test_batcher_merges_concurrent_requests_and_splits_answers():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(_double(calls), max_batch=32, max_delay_s=0.05, max_queue=100)

        async def one(i):
            async with b.admit():
                return await b.submit(_items(10 * i, 3))

        outs = await asyncio.gather(*(one(i) for i in range(8)))
        await b.close()
        return outs

    outs = asyncio.run(main())
    for i, out in enumerate(outs):  # every request gets back its own rows, in order
        np.testing.assert_array_equal(out[:, 0], np.arange(10 * i, 10 * i + 3))
    assert sum(calls) == 24 and len(calls) < 8  # fewer forward passes than requests
    assert max(calls) <= 32


def test_batcher_max_batch_one_runs_each_request_alone_and_bounds_queue():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(_double(calls), max_batch=1, max_delay_s=0.05, max_queue=2)

        async def one(i):
            async with b.admit():
                return await b.submit(_items(i, 5))

        results = await asyncio.gather(*(one(i) for i in range(4)), return_exceptions=True)
        await b.close()
        return results

    results = asyncio.run(main())
    full = [r for r in results if isinstance(r, QueueFull)]
    assert len(full) == 2 and full[0].headers["Retry-After"].isdigit()
    assert calls == [5, 5]  # a request is never split, and never joined with another at max_batch=1


def test_batcher_close_finishes_admitted_requests():
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(_double(calls), max_batch=4, max_delay_s=0.01, max_queue=10)

        async def one(i):
            async with b.admit():
                await asyncio.sleep(0.05)  # still "preprocessing" when close() starts
                return await b.submit(_items(i, 2))

        tasks = [asyncio.create_task(one(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        await b.close(timeout_s=10)
        return [t.result() for t in tasks]

    outs = asyncio.run(main())
    assert [o.shape for o in outs] == [(2, 2)] * 3 and sum(calls) == 6


def test_batcher_batches_windows_splitting_requests_and_reports_stages():
    """Passes are filled to max_batch windows across requests (a request may span two passes); answers are whole."""
    from serve.observability import Metrics

    calls: list[int] = []
    metrics = Metrics()

    async def main():
        b = DynamicBatcher(_double(calls), max_batch=8, max_delay_s=0.5, max_queue=100, labels=("m", "1"), metrics=metrics)

        async def one(i):
            async with b.admit():
                return await b.submit(_items(100 * i, 5))

        outs = await asyncio.gather(*(one(i) for i in range(4)))
        await b.close()
        return outs

    outs = asyncio.run(main())
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out[:, 0], np.arange(100 * i, 100 * i + 5))
    assert calls == [8, 8, 4]  # 20 windows in full passes of 8, not 4 passes of one request each
    count = metrics.registry.get_sample_value
    assert count("brainforge_stage_seconds_count", {"model": "m", "version": "1", "stage": "forward"}) == 4
    assert count("brainforge_stage_seconds_count", {"model": "m", "version": "1", "stage": "queue_wait"}) == 4


def test_batcher_does_not_wait_when_nothing_else_is_coming():
    """A lone request runs at once (no other admitted request is still preprocessing), whatever max_delay_s is."""
    calls: list[int] = []

    async def main():
        b = DynamicBatcher(_double(calls), max_batch=32, max_delay_s=30.0, max_queue=10)
        t0 = time.monotonic()
        async with b.admit():
            await b.submit(_items(0, 2))
        lone = time.monotonic() - t0

        async def slow(i, delay):  # the second request is still preprocessing when the first submits
            async with b.admit():
                await asyncio.sleep(delay)
                return await b.submit(_items(i, 2))

        t0 = time.monotonic()
        await asyncio.gather(slow(0, 0.0), slow(10, 0.2))
        pair = time.monotonic() - t0
        await b.close()
        return lone, pair

    lone, pair = asyncio.run(main())
    assert lone < 15.0  # far below max_delay_s = 30 s, even on a loaded machine
    assert calls[0] == 2 and calls[1:] == [4]  # the pair waited for each other: one pass
    assert pair < 15.0


# --- docker (static) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_run_as_non_root_with_healthcheck(name):
    lines = [ln.strip() for ln in (ROOT / "docker" / name).read_text().splitlines()]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("HEALTHCHECK "))
    check = " ".join(lines[at : at + 2])  # the instruction and its continuation line
    assert '"serve", "health"' in check and "8000" not in check  # `serve health` reads BRAINFORGE_PORT
    entry = [ln for ln in lines if ln.startswith(("CMD", "ENTRYPOINT"))]
    assert any('"serve"' in ln for ln in entry)


def test_compose_file_is_consistent():
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    server = doc["services"]["server"]
    assert server["build"]["dockerfile"].endswith("Dockerfile")
    mounts = [v for v in server["volumes"] if v["target"] == "/registry"]
    assert len(mounts) == 1 and mounts[0]["read_only"] is True and mounts[0]["type"] == "bind"
    assert server["environment"]["BRAINFORGE_REGISTRY"] == "/registry"
    assert doc["services"]["prometheus"]["depends_on"]["server"]["condition"] == "service_healthy"  # Dockerfile HEALTHCHECK
    prom = doc["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert any(t.startswith("server:") for t in targets)
    assert json.dumps(doc)  # plain data, nothing YAML-specific left
