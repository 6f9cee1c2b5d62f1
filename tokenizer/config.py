"""`TokenizerConfig`: every size of the BrainTokenizer, with `tiny`, `small` and `base` presets.

A window of ``window_samples`` samples at ``sfreq`` Hz is cut into ``n_frames`` frames of ``hop`` samples,
frame f centred on sample ``f * hop``; each frame of each of ``n_latent`` latent channels gets
``rvq_levels`` codes from codebooks of ``codebook_size`` entries. Defaults: 512 samples at 256 Hz,
hop 64, 8 frames, 16 latents, 4 levels of 1024 codes = 512 tokens per 2 s window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data.preprocess import MODEL_SFREQ
from runkit.config import DictConfig


def _to_tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples."""
    if isinstance(value, list | tuple):
        return tuple(_to_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class TokenizerConfig(DictConfig):
    """Sizes and loss weights of a BrainTokenizer. Lengths are in samples, frequencies in Hz."""

    # window and framing
    sfreq: float = MODEL_SFREQ
    window_samples: int = 512
    hop: int = 64

    # widths
    d_model: int = 256
    n_heads: int = 8
    ffn_mult: int = 2

    # sensor encoder: random Fourier features of normalised positions
    n_fourier: int = 16
    fourier_sigma: float = 1.0

    # per-channel encoder: one strided convolution per time scale, kernel = scale * hop samples centred on
    # the frame (0.25, 0.5 and 1 s at 256 Hz), the multi-scale idea of NeuroRVQ's inception branches
    patch_scales: tuple[int, ...] = (1, 2, 4)
    # time-frequency motif path (torch.stft, Hann window, hop = frame hop)
    stft_n_fft: int = 128
    spectral_mask_prob: float = 0.1

    # channel compression and latent mixing
    n_latent: int = 16
    n_latent_layers: int = 2
    # decoder's attention over the latents: "learned" alone, or "mirrored" (plus the encoder's routing logits,
    # transposed: a channel is read back from the latents that pooled it). Every preset mirrors; the field's
    # default stays "learned" so that packages saved before it existed load as they were trained.
    decoder_routing: str = "learned"
    # one learned map per latent after pooling, its inverse before decoding (`tokenizer.layers.LatentMaps`): the
    # latents of a window with fewer channels than latents no longer coincide. On in `small` (why: there); the
    # field's default stays off so that packages saved before it existed load as they were trained. Without
    # feature-path supervision it cost more: held-out EEG PCC 0.608 -> 0.578 (bench/results/tokenizer_quality_maps.md)
    latent_maps: bool = False
    # encoder pooling weights balanced over channels (Sinkhorn, `tokenizer.layers.balanced_routing`): every channel
    # gets the same share of the latents, and the decoder mirrors those weights. On in `small`; the field's default
    # stays off so that packages saved before it existed load as they were trained
    balanced_routing: bool = False

    # residual vector quantizer
    rvq_levels: int = 4
    codebook_size: int = 1024
    codebook_dim: int = 128
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 10
    # a code whose EMA count of vectors per step falls below this is re-seeded from the batch; keep it near half
    # the mean count, B x n_latent x n_frames / codebook_size (4 for base.yaml's batch of 32, 1 for small.yaml's 8)
    threshold_ema_dead_code: float = 2
    rotation_trick: bool = True

    # gain-shape coding: each channel-window is divided by its RMS (floored, scaled units) before the
    # encoder, which also gets log RMS; the decoder rebuilds shape and log RMS; losses are scored per
    # channel-window on the target's RMS scale, so no heavy-tailed recording dominates
    rms_floor: float = 0.05

    # training extras
    channel_dropout: float = 0.25
    input_noise_std: float = 0.1
    # share of training samples whose positions are all hidden, so that identities from channel names
    # (used for channels without positions) are learned on every kind of recording
    position_dropout: float = 0.2
    # share of training samples whose EEG positions are replaced by the ones the data stage infers from the signal
    # when a recording has none (`data.signal_positions`, MDS of the window's channel correlations): the layouts the
    # model meets on such recordings at inference are then no longer unlike every training layout. 0 = off
    signal_position_prob: float = 0.0

    # losses: log(|X| + floor) on the orthonormal rfft, and the weights of the total
    log_amp_floor: float = 0.1
    weight_time_l1: float = 1.0
    weight_pcc: float = 1.0
    weight_log_amp: float = 1.0
    weight_phase: float = 0.5
    weight_commitment: float = 1.0
    weight_log_rms: float = 1.0
    # feature-path supervision (`tokenizer.losses.feature_path_losses`): the waveform decoder also rebuilds each
    # channel from its own encoder features, and the decoder's per-channel frames are pulled towards those features.
    # Training only; 0 = off (the field default, as trained before it existed)
    weight_direct: float = 0.0
    weight_match: float = 0.0

    def __post_init__(self) -> None:
        if self.hop < 2 or self.hop % 2:
            raise ValueError(f"TokenizerConfig: hop {self.hop} must be an even number of samples")
        if self.window_samples % self.hop:
            raise ValueError(f"TokenizerConfig: window_samples {self.window_samples} is not a multiple of hop {self.hop}")
        if not self.patch_scales or any(s < 1 for s in self.patch_scales):
            raise ValueError(f"TokenizerConfig: patch_scales {self.patch_scales} must be positive integers")
        if self.d_model % self.n_heads:
            raise ValueError(f"TokenizerConfig: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.stft_n_fft < self.hop:
            raise ValueError(f"TokenizerConfig: stft_n_fft {self.stft_n_fft} is shorter than hop {self.hop}")
        if not 0.0 <= self.position_dropout <= 1.0:
            raise ValueError(f"TokenizerConfig: position_dropout {self.position_dropout} must be in [0, 1]")
        if not 0.0 <= self.signal_position_prob <= 1.0:
            raise ValueError(f"TokenizerConfig: signal_position_prob {self.signal_position_prob} must be in [0, 1]")
        if self.decoder_routing not in ("learned", "mirrored"):
            raise ValueError(f"TokenizerConfig: decoder_routing {self.decoder_routing!r} must be 'learned' or 'mirrored'")
        if self.rms_floor <= 0:
            raise ValueError(f"TokenizerConfig: rms_floor {self.rms_floor} must be positive")
        if not 0.0 <= self.channel_dropout < 1.0:
            raise ValueError(f"TokenizerConfig: channel_dropout {self.channel_dropout} must be in [0, 1)")

    @property
    def n_frames(self) -> int:
        """Frames F per window."""
        return self.window_samples // self.hop

    @property
    def window_s(self) -> float:
        """Window length in seconds."""
        return self.window_samples / self.sfreq

    @property
    def n_freq_bins(self) -> int:
        """rfft bins of the STFT path."""
        return self.stft_n_fft // 2 + 1

    @classmethod
    def _from_json(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {k: _to_tuples(v) for k, v in d.items()}

    @classmethod
    def tiny(cls) -> TokenizerConfig:
        """For tests and CPU smoke runs: a train step in well under a second at B=4, C=32."""
        return cls(
            d_model=32,
            n_heads=2,
            n_fourier=8,
            n_latent_layers=1,
            codebook_size=256,
            codebook_dim=16,
            decoder_routing="mirrored",
        )

    @classmethod
    def small(cls) -> TokenizerConfig:
        """Single-GPU experiments."""
        return cls(
            d_model=128,
            n_heads=4,
            n_latent_layers=1,
            codebook_dim=64,
            decoder_routing="mirrored",
            # small.yaml's batch of 8 windows gives 8 x 16 x 8 / 1024 = 1 vector per code per step: at the
            # default threshold of 2 most codes were re-seeded every step (see `threshold_ema_dead_code`)
            threshold_ema_dead_code=0.5,
            # no input channel dropout: measured with bench/tokenizer_quality.py at 30 min, held-out EEG PCC 0.602 ->
            # 0.608, MEG 0.390 -> 0.418, ch-ch correlation gap 0.161 -> 0.118, while channels hidden from the encoder
            # are still rebuilt almost as well (PCC 0.557 -> 0.552 with a quarter hidden, 0.551 -> 0.548 with half;
            # bench/results/tokenizer_quality*.md): a hidden channel is read from the latents that pooled its neighbours
            channel_dropout=0.0,
            # balanced pooling weights, 30 min of bench/tokenizer_quality.py: held-out EEG PCC 0.608 -> 0.642, NMSE
            # 0.860 -> 0.654, MEG PCC 0.418 -> 0.474, but the reconstruction's channel-to-channel correlation gap
            # 0.118 -> 0.220 (bench/results/tokenizer_quality_balanced.md); at 1,500 steps 0.493 / 0.489 -> 0.574 / 0.544
            balanced_routing=True,
            # a third of the training samples see their EEG placed from the signal, as recordings without a montage
            # are: 30 min of bench/tokenizer_quality.py, held-out EEG PCC 0.642 -> 0.706 (without a position 0.640 ->
            # 0.705, with one 0.792 -> 0.842), NMSE 0.654 -> 0.550, ch-ch gap 0.220 -> 0.128, MEG 0.474 -> 0.494
            # (bench/results/tokenizer_quality_sigpos.md)
            signal_position_prob=0.3,
            # feature-path supervision (`tokenizer.losses.feature_path_losses`): 30 min of bench/tokenizer_quality.py,
            # held-out EEG PCC 0.705 -> 0.824 (without a position 0.703 -> 0.824), NMSE 0.538 -> 0.338, MEG 0.496 ->
            # 0.542, ch-ch gap 0.129 -> 0.082, level-0 spatial copy 11.7% -> 16.3% (bench/results/
            # tokenizer_quality_small_v5.md -> tokenizer_quality_feature_path.md)
            weight_direct=1.0,
            weight_match=1.0,
            # a learned map per latent (`LatentMaps`): the latents of a few-channel window no longer coincide, so
            # masked-token pretraining cannot copy them. Two 30-min runs of bench/tokenizer_quality.py: level-0 spatial
            # copy 16.3% -> 0.1% / 0.2%, usage 81% -> 99%, held-out EEG PCC 0.824 -> 0.798 / 0.798 (bench/results/
            # tokenizer_quality_feature_path_maps*.md); pretraining on those tokens beats the copy baselines at
            # every level (L0 19.6% against spatial copy 0.1%, frame copy 2.0%; bench/results/pretrain_all_v7_maps.md),
            # on the feature-path tokens it did not (12.4% against 14.9%; pretrain_all_v6_cbhead.md). Over a whole
            # 30-min budget with the schedule annealed by the clock (14,228 steps): held-out EEG PCC 0.805, without a
            # position 0.814, spatial copy 0.2% (tokenizer_quality_small_v8.md)
            latent_maps=True,
        )

    @classmethod
    def base(cls) -> TokenizerConfig:
        """The published default."""
        return cls(decoder_routing="mirrored")

    @classmethod
    def preset(cls, name: str) -> TokenizerConfig:
        """`tiny`, `small` or `base` by name."""
        presets = {"tiny": cls.tiny, "small": cls.small, "base": cls.base}
        if name not in presets:
            raise ValueError(f"TokenizerConfig: unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()
