"""Tokens that carry information: every channel and every latent of a window is distinguishable.

On real EEG from ``tests/data``: channels without positions get their own identity (from their names)
so the decoder does not give them one shared waveform; the latents of a frame are not near-duplicates
at initialisation; and ``tiny`` has the capacity to fit a fixed batch of real windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data import prepare, window_dataset
from data.dataset import WindowCollator
from data.sensors import channel_identities, channel_identity
from tokenizer.config import TokenizerConfig
from tokenizer.layers import LatentMaps
from tokenizer.losses import pearson
from tokenizer.metrics import channel_correlation, token_redundancy
from tokenizer.model import BrainTokenizer

N_CHANNELS = 24  # EEG channels of the MNE sample recording used here (of 60), to keep the fits short


@pytest.fixture(scope="module")
def eeg_batch(fixtures, tmp_path_factory) -> dict:
    """2 real 2 s windows of the MNE sample recording, its first N_CHANNELS EEG channels."""
    out = tmp_path_factory.mktemp("identity") / "shards"
    prepare([fixtures / "sample_audvis_5s_raw.fif"], out, progress=False)
    ds = window_dataset(out)
    batch = WindowCollator(None)([ds[i] for i in range(2)])
    eeg = torch.nonzero(batch["types"][0] == 0).flatten()[:N_CHANNELS]
    return {k: (v[:, eeg] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _without_positions(batch: dict) -> dict:
    return {**batch, "positions": torch.full_like(batch["positions"], float("nan"))}


def _mean_offdiag_cosine(x: torch.Tensor) -> float:
    """Mean cosine between distinct rows along the second-to-last axis: [..., N, D] -> float."""
    z = F.normalize(x.float(), dim=-1)
    cos = z @ z.transpose(-1, -2)
    n = cos.shape[-1]
    return float(((cos.sum((-1, -2)) - n) / (n * n - n)).mean())


def test_channel_identity_is_stable_and_distinct() -> None:
    assert channel_identity("EEG 000") == channel_identity(" eeg 000 ")  # same label, any case/spacing
    ids = channel_identities([f"EEG {i:03d}" for i in range(256)])
    assert len(set(ids.tolist())) == 256 and (ids > 0).all()
    assert channel_identity("EEG 000") == 4364831141222562194  # fixed across processes and releases (sha256)


def test_collator_carries_identities_from_names_when_items_lack_them() -> None:
    item = {"signal": np.zeros((2, 64), np.float32), "types": np.zeros(2, np.int8),
            "positions": np.full((2, 3), np.nan, np.float32), "orientations": np.zeros((2, 3), np.float32),
            "channels": ("A1-Cz", "C3-front")}
    batch = WindowCollator(None)([item, {k: v for k, v in item.items() if k != "channels"}])
    assert batch["channel_ids"][0].tolist() == channel_identities(["A1-Cz", "C3-front"]).tolist()
    assert batch["channel_ids"][1].tolist() == [0, 0]  # nothing to identify them by


def test_unknown_channels_get_distinct_decoder_queries(eeg_batch) -> None:
    """With every position removed, no two channels of the window share a sensor embedding (the decoder's
    query); without identities (old shards) they would all be the same vector."""
    torch.manual_seed(0)
    model = BrainTokenizer(TokenizerConfig.tiny()).eval()
    b = _without_positions(eeg_batch)
    with torch.no_grad():
        sensor = model.sensor_encoder(b["types"], b["positions"], b["orientations"], b["channel_ids"])[0]
        anonymous = model.sensor_encoder(b["types"], b["positions"], b["orientations"], None)[0]
    cos = F.normalize(sensor, dim=-1) @ F.normalize(sensor, dim=-1).T
    off = cos[~torch.eye(len(cos), dtype=torch.bool)]
    assert off.max() < 0.95, f"two unknown channels have near-identical queries (cosine {off.max():.3f})"
    assert torch.allclose(anonymous, anonymous[:1].expand_as(anonymous), atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_latents_of_a_frame_are_not_near_duplicates_at_initialisation(eeg_batch, preset) -> None:
    """Before any training, the N_latent latent vectors of one frame differ (was: mean cosine 0.997-0.999)."""
    torch.manual_seed(0)
    model = BrainTokenizer(TokenizerConfig.preset(preset)).eval()
    b = eeg_batch
    with torch.no_grad():
        sensor = model.sensor_encoder(b["types"], b["positions"], b["orientations"], b["channel_ids"])
        latents = model.encoder(b["signal"], sensor, b["channel_mask"])  # [B, N, F, D]
    cosine = _mean_offdiag_cosine(latents.transpose(1, 2))
    assert cosine < 0.95, f"{preset}: latents of a frame have mean cosine {cosine:.3f}"


def test_latent_maps_keep_the_latents_of_a_one_channel_window_apart(eeg_batch) -> None:
    """One real channel: every latent pools the same vector, so without maps the N latents of a frame coincide
    (cosine 1) and share their codes; with ``latent_maps`` they differ, and the decoder's maps start as the
    encoder's inverses (the pair begins as the identity)."""
    one = {k: (v[:, :1] if isinstance(v, torch.Tensor) and v.ndim >= 2 else v) for k, v in eeg_batch.items()}
    cosines = {}
    for maps in (False, True):
        torch.manual_seed(0)
        cfg = TokenizerConfig.from_dict({**TokenizerConfig.tiny().to_dict(), "latent_maps": maps})
        model = BrainTokenizer(cfg).eval()
        with torch.no_grad():
            sensor = model.sensor_encoder(one["types"], one["positions"], one["orientations"], one["channel_ids"])
            latents = model.encoder(one["signal"], sensor, one["channel_mask"])
        cosines[maps] = _mean_offdiag_cosine(latents.transpose(1, 2))
    assert cosines[False] > 0.999, cosines
    assert cosines[True] < 0.5, cosines
    enc, dec = model.encoder.compressor.maps.weight, model.decoder.query.maps.weight
    assert torch.allclose(enc @ dec, torch.eye(enc.shape[-1]).expand_as(enc), atol=1e-5)


def test_tiny_fits_real_windows_without_positions_and_keeps_channels_apart(eeg_batch) -> None:
    """Capacity and channel identity in one fit: ``tiny`` overfits a fixed batch of real EEG windows whose
    positions are all removed to PCC >= 0.9, and the reconstruction's channel-to-channel correlation stays
    within 0.2 of the original's (a decoder that gave every channel the same waveform would score 1.0).
    A quality threshold after a fixed number of steps, never a timing."""
    torch.manual_seed(0)
    cfg = TokenizerConfig.from_dict({**TokenizerConfig.tiny().to_dict(), "channel_dropout": 0.0,
                                     "input_noise_std": 0.0, "position_dropout": 0.0})
    model = BrainTokenizer(cfg)
    b = _without_positions(eeg_batch)
    opt = torch.optim.AdamW(model.parameters(), lr=STEPS_LR[1])
    for _ in range(STEPS_LR[0]):
        model.train()
        loss = model(b)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    geo = (b["types"], b["positions"], b["orientations"], b["channel_mask"], b["channel_ids"])
    with torch.no_grad():
        indices = model.encode(b["signal"], *geo)
        recon = model.decode(indices, *geo)
    pcc = float(pearson(recon, b["signal"]).mean())
    corr_orig, corr_recon = float(channel_correlation(b["signal"]).mean()), float(channel_correlation(recon).mean())
    assert pcc >= 0.9, f"PCC {pcc:.3f} after {STEPS_LR[0]} steps"
    assert abs(corr_recon - corr_orig) <= 0.2, f"channel-channel correlation {corr_orig:.2f} -> {corr_recon:.2f}"
    assert token_redundancy(indices)["distinct_l0"] > 1.5  # the latents of a frame do not share one code


STEPS_LR = (400, 1e-2)


def test_signal_position_augmentation_places_eeg_as_inference_does(eeg_batch) -> None:
    """A sample chosen for ``signal_position_prob`` gets exactly the positions the data stage would infer for a
    recording without a montage (MDS of the window's correlations, on the 0.095 m sphere); others keep theirs."""
    from data.signal_positions import MDS_RADIUS_M, positions_from_signal
    from tokenizer.model import sample_signal_positions

    signal, positions, types = eeg_batch["signal"], eeg_batch["positions"].float(), eeg_batch["types"]
    mask = torch.ones(types.shape, dtype=torch.bool)
    mask[1, -4:] = False  # padding in the second window
    assert torch.equal(sample_signal_positions(signal, positions, types, mask, 0.0), positions)
    placed = sample_signal_positions(signal, positions, types, mask, 1.0)
    expected, rules = positions_from_signal(
        signal[0].numpy(), np.full((N_CHANNELS, 3), np.nan), np.ones(N_CHANNELS, dtype=bool)
    )
    assert set(rules) == {"signal:mds"}
    np.testing.assert_allclose(placed[0].numpy(), expected, atol=1e-6)
    assert not torch.allclose(placed[0], positions[0])
    np.testing.assert_allclose(placed[1, :-4].norm(dim=-1).numpy(), MDS_RADIUS_M, rtol=1e-5)
    assert torch.equal(placed[1, -4:], positions[1, -4:])  # padded channels are left alone
    with pytest.raises(ValueError, match="signal_position_prob"):
        TokenizerConfig(signal_position_prob=1.5)


def test_latent_maps_apply_one_matrix_per_latent_and_their_transpose_inverts_them() -> None:
    maps, inverse = LatentMaps(16, 32), LatentMaps(16, 32, transpose=True)
    x = torch.randn(2, 3, 16, 32)
    torch.testing.assert_close(maps(x)[1, 2, 5], x[1, 2, 5] @ maps.weight[5])
    torch.testing.assert_close(inverse(maps(x)), x, atol=1e-5, rtol=1e-5)
