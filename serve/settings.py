"""Server settings: command-line flags override ``BRAINFORGE_*`` environment variables, which override defaults."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server needs. Env: ``BRAINFORGE_REGISTRY``, ``BRAINFORGE_PORT``, ``BRAINFORGE_MAX_BATCH``, ..."""

    model_config = SettingsConfigDict(env_prefix="BRAINFORGE_", extra="ignore")

    registry: Path = Field(description="registry folder holding NAME/VERSION model packages (required)")
    host: str = Field("127.0.0.1", description="bind address; a non-loopback one needs --api-keys or --allow-anonymous")
    port: int = Field(8000, ge=0, le=65535, description="port (0 picks a free one)")
    api_keys: Path | None = Field(None, description="keys file (keyed hashes); when set, every route but health, "
                                  "readiness and the docs needs 'Authorization: Bearer KEY'")
    allow_anonymous: bool = Field(False, description="serve without keys on a non-loopback address (refused otherwise)")
    max_key_failures: int = Field(20, ge=1, description="failed key checks per client per minute before 429")
    key_failure_delay_s: float = Field(1.0, ge=0, le=30, description="delay before each 429 to a client over its "
                                       "failed-key budget (a tarpit: a wrong-key flood slows itself down)")

    # batching and queueing
    max_batch: int = Field(32, ge=1, description="most windows per forward pass (1 = one request per forward pass)")
    max_delay_ms: float = Field(10.0, ge=0, description="longest a request waits for others to join its batch")
    max_queue: int = Field(64, ge=1, description="requests admitted per model (preprocessing, waiting or running); more get 429")
    preprocess_threads: int = Field(2, ge=1, description="threads reading and preprocessing inputs")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: half the CPU cores, at least 1)")
    device: str = Field("cpu", description="where models run: 'cpu', 'cuda', 'cuda:N' (must be available at startup), "
                        "or 'auto' (CUDA when available, else the CPU with a warning)")

    # limits
    max_body_mb: float = Field(200.0, gt=0, description="largest request body (upload) in MB (413 beyond)")
    max_json_mb: float = Field(100.0, gt=0, description="largest JSON body in MB (413 beyond); large signals go "
                               "as uploads or binary tensors")
    max_inflight_mb: float = Field(1024.0, gt=0, description="server-wide memory budget for JSON bodies being parsed, "
                                   "in MB (a body counts 10x its size; 429 when spent)")
    max_upload_space_mb: float = Field(4096.0, gt=0, description="server-wide disk budget for uploads and unpacked "
                                       "zips, in MB (429 when spent)")
    max_duration_s: float = Field(3600.0, gt=0, description="longest recording in seconds (422 beyond)")
    max_channels: int = Field(512, ge=1, description="most channels in one input (422 beyond)")
    min_sfreq: float = Field(64.0, gt=0, description="lowest sampling rate in Hz (422 below)")
    max_sfreq: float = Field(20000.0, gt=0, description="highest sampling rate in Hz (422 above)")
    upload_dir: Path | None = Field(None, description="where per-request upload folders go (default: the system temp dir)")
    max_zip_mb: float = Field(1000.0, gt=0, description="largest total unpacked size of an uploaded zip in MB")
    max_zip_ratio: float = Field(100.0, gt=1, description="largest unpacked/packed size ratio of a zip (and of a "
                                 "member over 1 MB); zip bombs are refused before anything is unpacked")

    # registry, startup and shutdown
    preload: bool = Field(True, description="load the latest version of every model at startup (ready when done)")
    rescan_interval_s: float = Field(1.0, ge=0, description="at most one registry rescan per interval (mtime check)")
    graceful_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for in-flight requests")
    keep_alive_s: float = Field(30.0, gt=0, description="idle keep-alive connections are closed after this many seconds; "
                                "longer than clients' own expiry (httpx, requests, aiohttp: 5-15 s) so that the client "
                                "drops an idle connection first and never sends on one the server just closed")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ...")

    @field_validator("registry")
    @classmethod
    def _registry_is_folder(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError(f"registry {v} is not a directory")
        return v.resolve()

    @field_validator("api_keys")
    @classmethod
    def _keys_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"api keys file {v} does not exist (create it with `python -m serve keys add --file {v}`)")
        return v

    @field_validator("device")
    @classmethod
    def _available_device(cls, v: str) -> str:
        import torch

        if v == "auto":
            if torch.cuda.is_available():
                return "cuda"
            logging.getLogger("brainforge.serve").warning(
                "no CUDA device is visible (in Docker, run with --gpus all): serving on the CPU")
            return "cpu"

        try:
            dev = torch.device(v)
        except RuntimeError as e:
            raise ValueError(f"device {v!r} is not a torch device name (use 'cpu', 'cuda' or 'cuda:N')") from e
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device {v!r}: the server runs models on 'cpu' or 'cuda' only")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {v!r}: CUDA is not available on this machine (torch {torch.__version__}); in "
                             "Docker, run the GPU image with --gpus all, or set BRAINFORGE_DEVICE=auto (falls back "
                             "to the CPU) or cpu")
        return v

    @model_validator(mode="after")
    def _sfreq_range(self) -> Settings:
        if self.min_sfreq >= self.max_sfreq:
            raise ValueError(f"min_sfreq {self.min_sfreq} must be below max_sfreq {self.max_sfreq}")
        return self

    @model_validator(mode="after")
    def _no_anonymous_network_server(self) -> Settings:
        if self.api_keys is None and not self.allow_anonymous and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines and no --api-keys file is given: create one "
                "with `python -m serve keys add --file keys.json`, or pass --allow-anonymous "
                "(BRAINFORGE_ALLOW_ANONYMOUS=1) to serve without keys")
        return self

    @property
    def intra_op_threads(self) -> int:
        """The preprocessing threads and the inference thread share the cores. The split: half the cores for the forward
        pass (intra-op threads of the one inference thread), the other half for parsing, preprocessing and HTTP
        (``preprocess_threads``, default 2, a thread pool in the same process; numpy, scipy and the FFTs release the
        GIL). bench/serve_load.py measured the two halves of a 64-channel 10 s request at about the same CPU time
        (binary body: parse ~1 ms + preprocess ~30-40 ms against ~30-50 ms of forward pass at 32 windows per pass), so
        an even split keeps both busy; giving torch more threads starves preprocessing (and small ops then wait on
        OpenMP barriers), giving it fewer leaves the forward pass, the part that batching makes cheaper, short of CPU.
        With torch's default (all cores) on
        2 busy cores, a one-window forward pass took about 1.5 s instead of 26 ms with one thread (measured in-process
        on the test package), and bench/serve_load.py ran 4-10x faster with this default."""
        return self.torch_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_zip_bytes(self) -> int:
        return int(self.max_zip_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, :: and any other address or name."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
