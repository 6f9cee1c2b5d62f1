"""`Tokenizer`: numpy in, numpy out, for windows of one recording described by a `SensorLayout`.

    tok = Tokenizer.from_pretrained("runs/tokenizer/package")
    indices = tok.encode(windows, layout)      # [N, C, T] float -> [N, N_latent, F, L] int64
    signal = tok.decode(indices, layout)       # -> [N, C, F * hop] float32

Signals are in the package's scaled units (apply ``tok.preprocessing`` first). A single window [C, T]
gives indices [N_latent, F, L] and back. Windows are batched, in eval mode, without gradients.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from data.sensors import SensorLayout
from tokenizer.config import TokenizerConfig
from tokenizer.model import BrainTokenizer
from tokenizer.package import load_package


class Tokenizer:
    """Inference wrapper around a `BrainTokenizer` loaded from a package directory."""

    def __init__(
        self,
        model: BrainTokenizer,
        preprocessing: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model.eval()
        self.preprocessing = preprocessing or {}
        self.metrics = metrics or {}
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu", batch_size: int = 64) -> Tokenizer:
        """Load a package written by `tokenizer.package.save_package`."""
        package = load_package(path, map_location=device)
        return cls(package.model, package.preprocessing, package.metrics, batch_size)

    @property
    def config(self) -> TokenizerConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _geometry(self, layout: SensorLayout, n: int) -> dict[str, torch.Tensor]:
        """Layout -> types [n, C] int64, positions [n, C, 3], orientations [n, C, 3], channel_ids [n, C] int64
        on the model's device, as keyword arguments of `BrainTokenizer.encode` / ``decode``."""

        def rep(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            t = torch.as_tensor(np.asarray(a), dtype=dtype, device=self.device)
            return t.unsqueeze(0).expand(n, *t.shape)

        return {
            "types": rep(layout.types, torch.long),
            "positions": rep(layout.positions, torch.float32),
            "orientations": rep(layout.orientations, torch.float32),
            "channel_ids": rep(layout.channel_ids, torch.long),
        }

    @torch.no_grad()
    def encode(self, signal: np.ndarray, layout: SensorLayout) -> np.ndarray:
        """signal [C, T] or [N, C, T] float (scaled units, T a multiple of hop) -> indices [(N,) N_latent, F, L] int64."""
        x = np.asarray(signal, dtype=np.float32)
        single = x.ndim == 2
        x = x[None] if single else x
        if x.ndim != 3 or x.shape[1] != len(layout):
            raise ValueError(f"Tokenizer.encode: signal shape {np.shape(signal)} does not match a layout of {len(layout)} channels")
        if not np.isfinite(x).all():
            raise ValueError("Tokenizer.encode: signal contains NaN or Inf")
        out = []
        for start in range(0, len(x), self.batch_size):
            chunk = torch.from_numpy(x[start : start + self.batch_size]).to(self.device)
            out.append(self.model.encode(chunk, **self._geometry(layout, len(chunk))).cpu().numpy())
        indices = np.concatenate(out)
        return indices[0] if single else indices

    @torch.no_grad()
    def decode(self, indices: np.ndarray, layout: SensorLayout) -> np.ndarray:
        """indices [N_latent, F, L] or [N, N_latent, F, L] int -> signal [(N,) C, F * hop] float32 for ``layout``."""
        idx = np.asarray(indices)
        single = idx.ndim == 3
        idx = idx[None] if single else idx
        cfg = self.config
        if idx.ndim != 4 or idx.shape[1] != cfg.n_latent or idx.shape[3] != cfg.rvq_levels:
            raise ValueError(
                f"Tokenizer.decode: indices shape {np.shape(indices)}, expected [N, {cfg.n_latent}, F, {cfg.rvq_levels}]"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= cfg.codebook_size):
            raise ValueError(f"Tokenizer.decode: indices outside [0, {cfg.codebook_size})")
        out = []
        for start in range(0, len(idx), self.batch_size):
            chunk = torch.as_tensor(idx[start : start + self.batch_size], dtype=torch.long, device=self.device)
            out.append(self.model.decode(chunk, **self._geometry(layout, len(chunk))).cpu().numpy())
        signal = np.concatenate(out)
        return signal[0] if single else signal
