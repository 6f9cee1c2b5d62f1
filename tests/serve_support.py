"""Helpers for the serving tests: a real uvicorn server on a free 127.0.0.1 port in a thread, request bodies,
a BrainVision zip derived from the bundled fixture."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

from serve.server import make_server
from serve.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "data"
BV_STEM = "test_old_layout_latin1_software_filter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """``with ServerThread(settings) as srv: httpx.get(srv.url + "/v2/health/live")``; leaving the block (or
    ``stop()``) asks uvicorn to exit as on SIGTERM: in-flight requests finish first."""

    def __init__(self, settings: Settings) -> None:
        import torch

        # keep the test process's torch thread count (the server would set it process-wide)
        update = {"host": "127.0.0.1", "port": 0, "torch_threads": settings.torch_threads or torch.get_num_threads()}
        self.server = make_server(settings.model_copy(update=update), configure_logging=False)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.url = ""

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        while httpx.get(f"{self.url}/v2/health/ready", timeout=30).status_code != 200:  # models preloaded
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)
        return self

    @property
    def app(self):
        return self.server.config.app

    def stop(self, timeout: float = 60) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def v2_body(x: np.ndarray, names: list[str], sfreq: float, **params) -> dict:
    """An Open Inference Protocol v2 request for ``x`` [C, T] or [N, C, T] (volts)."""
    name = "epochs" if np.ndim(x) == 3 else "signal"  # the protocol's inputs: signal [C, T], epochs [N, C, T]
    return {"id": "req-1", "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                       "data": np.asarray(x, np.float32).ravel().tolist()}],
            "parameters": {"sfreq": sfreq, "channel_names": names, **params}}


def eeg_signal(n_channels: int, seconds: float, sfreq: float = 256.0, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Pink-ish noise plus a 10 Hz rhythm, in volts, with 10-05 channel names where they exist."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = np.cumsum(rng.standard_normal((n_channels, n)), axis=1) * 1e-7 + 2e-5 * np.sin(2 * np.pi * 10 * t)
    x -= x.mean(axis=1, keepdims=True)
    standard = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4",
                "P8", "O1", "Oz", "O2", "AF3", "AF4", "FC5", "FC1", "FC2", "FC6", "CP5", "CP1", "CP2", "CP6", "PO3", "PO4"]
    names = [standard[i] if i < len(standard) else f"E{i}" for i in range(n_channels)]
    return x.astype(np.float32), names


def brainvision_zip(dest: Path, repeats: int = 3) -> tuple[Path, Path]:
    """The bundled 1 s BrainVision recording (29 EEG, 250 Hz, float32, channel-major) tiled ``repeats`` times in
    time so it holds whole 2 s windows; header and markers unchanged. Returns (zip, folder with the .vhdr)."""
    folder = dest / "bv"
    folder.mkdir(parents=True, exist_ok=True)
    src = FIXTURES / "brainvision"
    for ext in ("vhdr", "vmrk"):
        shutil.copy(src / f"{BV_STEM}.{ext}", folder / f"{BV_STEM}.{ext}")
    data = np.fromfile(src / f"{BV_STEM}.eeg", dtype="<f4").reshape(29, -1)  # DataOrientation=VECTORIZED
    np.tile(data, (1, repeats)).astype("<f4").tofile(folder / f"{BV_STEM}.eeg")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"recording/{f.name}")
    archive = dest / "bv.zip"
    archive.write_bytes(buf.getvalue())
    return archive, folder / f"{BV_STEM}.vhdr"
