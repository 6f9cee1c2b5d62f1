"""`BrainTokenizer`: sensor encoder -> per-channel encoder -> latent queries -> RVQ -> sensor-query decoder.

Mixed channel counts
--------------------
The model never depends on a channel count or a channel's index. A batch holds B windows padded to the
largest channel count C in the batch, with ``channel_mask`` [B, C] (True = real channel, padding rows are
zeros). The per-channel encoder and the waveform decoder run only on the real channels (``x[mask]``), the
latent queries attend only over unmasked channels, and losses average only over real channels. So EEG
windows with 19 channels and MEG windows with 306 can share a batch, and a window padded with extra
masked channels gives the same tokens as the unpadded one. To bound memory with large MEG arrays, the
collate may keep a random subset of at most ``max_channels`` channels of each item (a fresh subset each
time the item is drawn): the tokenizer works from any subset of sensors anyway. With ``channel_dropout``
(25% in ``tiny`` and ``base``), ``forward`` hides a fresh random share of each sample's real channels from the
encoder (never one mask per batch, always at least one channel kept) and reconstructs all of them; ``small``
trains without it and rebuilds hidden channels about as well (measured: see `TokenizerConfig.small`).
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from data.sensors import SensorType
from data.signal_positions import positions_from_signal
from tokenizer.config import TokenizerConfig
from tokenizer.decoder import BrainDecoder
from tokenizer.encoder import BrainEncoder
from tokenizer.layers import default_mask, scatter_channels
from tokenizer.losses import feature_path_losses, reconstruction_losses
from tokenizer.quantizer import RVQ
from tokenizer.sensor_encoder import SensorEncoder


def sample_channel_dropout(mask: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample input channel dropout.

    mask: [B, C] bool real channels. Each sample independently hides floor(fraction * n_real) of its real
    channels, chosen uniformly at random, but always keeps at least one. Returns the visible mask [B, C].
    """
    n_real = mask.sum(dim=1)
    n_drop = torch.minimum((n_real * fraction).floor().long(), (n_real - 1).clamp_min(0))
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    return mask & (rank >= n_drop[:, None])


def sample_position_dropout(positions: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Hide every position (NaN) of a random ``fraction`` of the samples: positions [B, C, 3] -> [B, C, 3]."""
    hide = torch.rand(positions.shape[0], device=positions.device, generator=generator) < fraction
    return torch.where(hide[:, None, None], torch.full_like(positions, float("nan")), positions)


def sample_signal_positions(
    signal: Tensor, positions: Tensor, types: Tensor, mask: Tensor, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """For a random ``fraction`` of the samples, replace the EEG positions by the ones placed from the signal alone
    (`data.signal_positions.positions_from_signal` with every EEG position hidden, as for a recording without a
    montage). signal [B, C, T], positions [B, C, 3] metres, types [B, C], mask [B, C] -> positions [B, C, 3].

    NumPy's BLAS runs on one thread here: its default pool competes with torch's threads for the cores. Per batch of
    8 windows of 132 channels, all chosen, on the 2 CPU cores: 22 ms limited against 52 ms with the default pool on an
    idle machine, 42 against 517 ms beside another 2-thread job; the 30-min tokenizer bench trained at ~290 steps/min
    with the limit against ~210 without."""
    chosen = torch.rand(positions.shape[0], generator=generator) < fraction
    eeg = (types == SensorType.EEG) & mask
    out = positions.clone()
    with threadpool_limits(1):
        for b in (chosen & (eeg.sum(dim=1) >= 3).cpu()).nonzero().flatten().tolist():
            rows = eeg[b]
            x = signal[b, rows].detach().float().cpu().numpy()
            placed, rules = positions_from_signal(x, np.full((len(x), 3), np.nan), np.ones(len(x), dtype=bool))
            if all(rules):
                out[b, rows] = torch.from_numpy(placed).to(out)
    return out


class BrainTokenizer(nn.Module):
    """EEG/MEG windows of any sensor layout <-> indices [B, N_latent, F, L].

    ``sync_codebook`` must say whether the codebooks are synchronised across processes (True under DDP);
    it is given explicitly, never guessed by the quantizer library.
    """

    def __init__(self, config: TokenizerConfig, sync_codebook: bool = False) -> None:
        super().__init__()
        self.config = config
        self.sensor_encoder = SensorEncoder(config.d_model, config.n_fourier, config.fourier_sigma, config.ffn_mult)
        self.encoder = BrainEncoder(config)
        self.quantizer = RVQ(config, sync_codebook=sync_codebook)
        self.decoder = BrainDecoder(config)

    def _routing(self, sensor: Tensor, mask: Tensor) -> Tensor | None:
        """The encoder's routing for the decoder to mirror [B, H, N_latent, C], or None when not configured."""
        return self.encoder.compressor.routing(sensor, mask) if self.config.decoder_routing == "mirrored" else None

    def _checked_mask(self, signal: Tensor, channel_mask: Tensor | None) -> Tensor:
        """Validate signal [B, C, T] and return the channel mask [B, C] (all True when None)."""
        if signal.ndim != 3 or signal.shape[-1] % self.config.hop:
            raise ValueError(
                f"BrainTokenizer: signal must be [B, C, T] with T a multiple of {self.config.hop}, got {tuple(signal.shape)}"
            )
        mask = default_mask(channel_mask, signal)
        if not mask.any(dim=1).all():
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"BrainTokenizer: channel_mask has no real channel in sample(s) {empty}")
        return mask

    def forward(self, batch: dict[str, Tensor], channel_dropout: bool = True) -> dict[str, Tensor | dict[str, Tensor]]:
        """One training/validation pass.

        batch: ``signal`` [B, C, T] float scaled units, ``types`` [B, C] int, ``positions`` [B, C, 3] metres
        (NaN = unknown), ``orientations`` [B, C, 3], optional ``channel_ids`` [B, C] int64 (name identities,
        0 = none) and ``channel_mask`` [B, C] bool.
        In training mode, with ``channel_dropout``, a fresh random ``config.channel_dropout`` share of each
        sample's real channels is hidden from the encoder, Gaussian noise of std ``input_noise_std`` is
        added to the encoder input, a ``config.signal_position_prob`` share of the samples get the EEG positions
        inferred from their signal (`sample_signal_positions`), and a ``config.position_dropout`` share lose all
        their positions (encoder and decoder then tell channels apart by name identity); all real channels are
        reconstructed and scored. With ``config.weight_direct`` / ``weight_match`` the loss also scores the
        per-channel path (`tokenizer.losses.feature_path_losses`; the terms appear in ``losses`` as "direct", "match").

        Returns ``recon`` [B, C, T] (float32, or the autocast dtype), ``indices`` [B, N_latent, F, L] int64,
        ``encoder_mask`` [B, C] bool (channels the encoder saw), ``loss`` (weighted total) and ``losses``
        (dict of named terms, float32).
        """
        signal = batch["signal"].float()
        mask = self._checked_mask(signal, batch.get("channel_mask"))
        positions = batch["positions"]
        if self.training and self.config.signal_position_prob > 0:
            positions = sample_signal_positions(
                signal, positions.float(), batch["types"], mask, self.config.signal_position_prob
            )
        if self.training and self.config.position_dropout > 0:
            positions = sample_position_dropout(positions.float(), self.config.position_dropout)
        sensor = self.sensor_encoder(batch["types"], positions, batch["orientations"], batch.get("channel_ids"))
        visible, noisy = mask, signal
        if self.training:
            if channel_dropout and self.config.channel_dropout > 0:
                visible = sample_channel_dropout(mask, self.config.channel_dropout)
            if self.config.input_noise_std > 0:
                noisy = signal + self.config.input_noise_std * torch.randn_like(signal)
        features = self.encoder.channel_encoder(noisy[visible])  # [M, F, D] for the visible channels
        quantized, indices, commitment = self.quantizer(self.encoder.compress(features, sensor, visible))
        frames = self.decoder.query(quantized, sensor, self._routing(sensor, mask))  # [B, C, F, D]
        recon = self.decoder.synthesize(frames, mask)
        loss, terms = reconstruction_losses(recon, signal, mask, commitment, self.config)
        if self.config.weight_direct > 0 or self.config.weight_match > 0:
            direct = None
            if self.config.weight_direct > 0:
                direct = self.decoder.synthesize(scatter_channels(features, visible), visible)
            extra, extra_terms = feature_path_losses(direct, frames[visible], features, signal, visible, self.config)
            loss, terms = loss + extra, {**terms, **extra_terms}
        return {"recon": recon, "indices": indices, "encoder_mask": visible, "loss": loss, "losses": terms}

    def encode(
        self,
        signal: Tensor,
        types: Tensor,
        positions: Tensor,
        orientations: Tensor,
        channel_mask: Tensor | None = None,
        channel_ids: Tensor | None = None,
    ) -> Tensor:
        """signal [B, C, T] scaled units (T a multiple of hop) + geometry (and name identities [B, C] int64,
        needed for channels without positions) -> indices [B, N_latent, T / hop, L] int64.

        Use in eval mode: in training mode the quantizer would update its codebooks.
        """
        mask = self._checked_mask(signal, channel_mask)
        sensor = self.sensor_encoder(types, positions, orientations, channel_ids)
        _, indices, _ = self.quantizer(self.encoder(signal.float(), sensor, mask))
        return indices.long()

    def decode(
        self,
        indices: Tensor,
        types: Tensor,
        positions: Tensor,
        orientations: Tensor,
        channel_mask: Tensor | None = None,
        channel_ids: Tensor | None = None,
    ) -> Tensor:
        """indices [B, N_latent, F, L] + target geometry ([B, C] types, [B, C, 3] positions/orientations,
        [B, C] name identities) -> signal [B, C, F * hop] float32 scaled units. The target sensors may
        differ from the encoded ones."""
        mask = default_mask(channel_mask, types)
        sensor = self.sensor_encoder(types, positions, orientations, channel_ids)
        return self.decoder(self.quantizer.indices_to_codes(indices), sensor, mask, self._routing(sensor, mask))
