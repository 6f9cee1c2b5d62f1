"""BrainTokenizer on synthetic EEG/MEG windows, tiny config (CPU, a few seconds)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from data.sensors import SensorLayout, SensorType
from tokenizer import (
    BrainTokenizer,
    CodebookUsage,
    ReconstructionMetrics,
    Tokenizer,
    TokenizerConfig,
    bits_per_channel_second,
    sample_channel_dropout,
    save_package,
    unit_circle_phase_loss,
)
from tokenizer.losses import feature_path_losses, reconstruction_losses

CFG = TokenizerConfig.tiny()
T = CFG.window_samples


def make_geometry(n_eeg: int, n_mag: int, n_grad: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """types [C], positions [C, 3] metres on head-sized spheres, orientations [C, 3]."""
    g = torch.Generator().manual_seed(seed)
    n = n_eeg + n_mag + n_grad
    types = torch.tensor([SensorType.EEG] * n_eeg + [SensorType.MAG] * n_mag + [SensorType.GRAD] * n_grad)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    direction[:, 2] = direction[:, 2].abs()
    radius = torch.where(types == SensorType.EEG, 0.09, 0.12)
    orientations = torch.where((types == SensorType.EEG)[:, None], 0.0, direction)
    tangent = torch.nn.functional.normalize(torch.linalg.cross(direction, torch.randn(n, 3, generator=g)), dim=-1)
    orientations = torch.where((types == SensorType.GRAD)[:, None], tangent, orientations)
    return {"types": types, "positions": direction * radius[:, None], "orientations": orientations}


def make_signal(batch: int, n_channels: int, seed: int = 0) -> torch.Tensor:
    """[B, C, T] sums of 3 sinusoids (2-40 Hz, random phases) plus noise, ~unit scale."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / CFG.sfreq
    freqs = 2 + 38 * torch.rand(batch, n_channels, 3, 1, generator=g)
    phases = 2 * math.pi * torch.rand(batch, n_channels, 3, 1, generator=g)
    amps = 0.5 + torch.rand(batch, n_channels, 3, 1, generator=g)
    x = (amps * torch.sin(2 * math.pi * freqs * t + phases)).sum(dim=2)
    return x + 0.2 * torch.randn(batch, n_channels, T, generator=g)


def make_batch(batch: int, counts: tuple[int, int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    geo = make_geometry(*counts, seed=seed)
    c = len(geo["types"])
    out = {k: v.unsqueeze(0).expand(batch, *v.shape).clone() for k, v in geo.items()}
    out["signal"] = make_signal(batch, c, seed)
    out["channel_mask"] = torch.ones(batch, c, dtype=torch.bool)
    return out


def geometry_args(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return batch["types"], batch["positions"], batch["orientations"]


@pytest.fixture(scope="module")
def trained() -> BrainTokenizer:
    """Tiny tokenizer, codebooks k-means-initialised on a mixed EEG+MEG batch, then 2 Adam steps; eval mode."""
    torch.manual_seed(0)
    model = BrainTokenizer(CFG)
    batch = make_batch(4, (20, 10, 20), seed=1)
    with torch.no_grad():
        model(batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


COUNTS = {
    "eeg1": (1, 0, 0),
    "eeg19": (19, 0, 0),
    "meg60": (0, 20, 40),
    "meg306": (0, 102, 204),
    "mixed306": (60, 82, 164),
}


@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
def test_shapes_and_cross_layout_decode(trained: BrainTokenizer, counts: tuple[int, int, int]) -> None:
    batch = make_batch(2, counts)
    c = sum(counts)
    with torch.no_grad():
        indices = trained.encode(batch["signal"], *geometry_args(batch))
        assert indices.shape == (2, CFG.n_latent, CFG.n_frames, CFG.rvq_levels) == (2, 16, 8, 4)
        assert indices.dtype == torch.int64
        assert 0 <= indices.min() and indices.max() < CFG.codebook_size
        recon = trained.decode(indices, *geometry_args(batch))
        assert recon.shape == (2, c, T) and recon.dtype == torch.float32
        other = make_batch(2, (7, 3, 6), seed=5)
        assert trained.decode(indices, *geometry_args(other)).shape == (2, 16, T)
        out = trained(batch)
    assert out["recon"].shape == (2, c, T)
    assert out["indices"].shape == (2, 16, 8, 4)
    assert all(torch.isfinite(v) for v in out["losses"].values())


def test_channel_order_invariance(trained: BrainTokenizer) -> None:
    batch = make_batch(3, (10, 8, 12), seed=2)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    permuted = {k: v[:, perm] for k, v in batch.items()}
    with torch.no_grad():
        a = trained.encode(batch["signal"], *geometry_args(batch))
        b = trained.encode(permuted["signal"], *geometry_args(permuted))
        assert len(a.unique()) > 4  # the codebook is not trivial
        assert torch.equal(a, b)
        recon = trained.decode(a, *geometry_args(batch))
        assert recon.abs().mean() > 1e-3  # the decoder is not trivial either
        torch.testing.assert_close(trained.decode(b, *geometry_args(permuted)), recon[:, perm])


def test_padding_invariance(trained: BrainTokenizer) -> None:
    small = make_batch(1, (19, 0, 0), seed=3)
    large = make_batch(1, (10, 10, 20), seed=4)
    padded = {}
    for key in ("signal", "types", "positions", "orientations"):
        pad = torch.zeros_like(large[key][:, :21])
        padded[key] = torch.cat([torch.cat([small[key], pad], dim=1), large[key]])
    padded["channel_mask"] = torch.cat([torch.arange(40) < 19, torch.ones(40, dtype=torch.bool)])[None].view(2, 40)
    with torch.no_grad():
        alone = trained.encode(small["signal"], *geometry_args(small))
        mixed = trained.encode(*(padded[k] for k in ("signal", "types", "positions", "orientations")), padded["channel_mask"])
        assert torch.equal(mixed[:1], alone)
        recon = trained.decode(mixed, *geometry_args(padded), padded["channel_mask"])
        assert torch.all(recon[0, 19:] == 0)
        torch.testing.assert_close(recon[:1, :19], trained.decode(alone, *geometry_args(small)))


def test_empty_sample_is_rejected(trained: BrainTokenizer) -> None:
    batch = make_batch(2, (4, 0, 0))
    batch["channel_mask"][1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        trained(batch)


def test_unknown_positions_are_finite() -> None:
    torch.manual_seed(0)
    model = BrainTokenizer(CFG)
    batch = make_batch(2, (8, 4, 4))
    batch["positions"][0, :5] = float("nan")
    batch["positions"][1, :] = float("nan")
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["recon"]).all()
    assert all(torch.isfinite(v) for v in out["losses"].values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.sensor_encoder.unknown_position.grad.abs().sum() > 0


def test_channel_dropout_is_per_sample() -> None:
    mask = torch.ones(8, 40, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 1:] = False
    visible = sample_channel_dropout(mask, 0.25, torch.Generator().manual_seed(0))
    assert not (visible & ~mask).any()
    assert visible[0].sum() == 30 and visible[1].sum() == 23 and visible[2].sum() == 1
    full = visible[[0, *range(3, 8)]]
    assert len({tuple(row.tolist()) for row in full}) == len(full)

    torch.manual_seed(0)
    model = BrainTokenizer(CFG).train()
    out = model(make_batch(4, (12, 6, 14)))
    seen = out["encoder_mask"]
    assert len({tuple(row.tolist()) for row in seen}) == 4 and (seen.sum(dim=1) == 24).all()
    assert out["recon"].shape == (4, 32, T)
    assert model(make_batch(2, (5, 0, 0)), channel_dropout=False)["encoder_mask"].all()


def test_phase_loss_zero_and_wrap_invariant() -> None:
    mask = torch.ones(1, 3, dtype=torch.bool)
    amp = torch.rand(1, 3, 33) + 0.1
    phi = (torch.rand(1, 3, 33) * 2 - 1) * math.pi
    spec = torch.polar(amp, phi)
    assert unit_circle_phase_loss(spec, spec, mask).abs() < 1e-6
    assert unit_circle_phase_loss(torch.polar(amp, phi + 2 * math.pi), spec, mask).abs() < 1e-6
    # across the +-pi boundary a 0.02 rad error stays 0.02 rad, the same loss as around 0
    t = torch.arange(T) / CFG.sfreq

    def sine(p: float) -> torch.Tensor:
        return torch.sin(2 * math.pi * 10 * t + p).view(1, 1, T)

    def loss(a: float, b: float) -> torch.Tensor:
        return unit_circle_phase_loss(torch.fft.rfft(sine(a)), torch.fft.rfft(sine(b)), mask[:, :1])

    near_wrap, near_zero = loss(math.pi - 0.01, -math.pi + 0.01), loss(0.01, -0.01)
    torch.testing.assert_close(near_wrap, near_zero, atol=1e-5, rtol=1e-3)
    assert near_wrap < 1e-3 < loss(0.0, math.pi / 2)


def test_losses_masked_and_finite() -> None:
    target = make_signal(2, 5)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    pred = target.clone()
    pred[1, 2:] = 1e3  # padding rows do not count
    total, terms = reconstruction_losses(pred, target, mask, torch.tensor(0.0), CFG)
    assert set(terms) == {"time_l1", "pcc", "log_amp", "phase", "commitment", "log_rms"}
    for v in (total, *terms.values()):
        assert torch.isfinite(v) and v.abs() < 1e-4
    total, _ = reconstruction_losses(torch.zeros_like(target), target, mask, torch.tensor(0.0), CFG)
    assert torch.isfinite(total) and total > 1


def test_feature_path_losses_vanish_when_each_path_is_exact() -> None:
    cfg = TokenizerConfig.small()
    target = make_signal(2, 4)
    visible = torch.tensor([[True] * 4, [True, True, False, False]])
    features = torch.randn(int(visible.sum()), cfg.n_frames, 8)
    total, terms = feature_path_losses(target.clone(), features.clone(), features, target, visible, cfg)
    assert set(terms) == {"direct", "match"} and total.abs() < 1e-4
    total, terms = feature_path_losses(torch.zeros_like(target), torch.zeros_like(features), features, target, visible, cfg)
    assert terms["direct"] > 1 and 0.9 < terms["match"] < 1.2  # match: MSE over the features' variance
    _, terms = feature_path_losses(None, features, features, target, visible, cfg)
    assert set(terms) == {"match"}  # no direct synthesis to score


def test_feature_path_losses_are_added_to_the_training_loss() -> None:
    torch.manual_seed(0)
    batch = make_batch(2, (6, 0, 0), seed=3)
    plain = BrainTokenizer(CFG).train()
    aided = BrainTokenizer(dataclasses.replace(CFG, weight_direct=1.0, weight_match=1.0)).train()
    assert "direct" not in plain(batch, channel_dropout=False)["losses"]
    out = aided(batch, channel_dropout=False)
    terms = out["losses"]
    recon_total, _ = reconstruction_losses(out["recon"], batch["signal"], batch["channel_mask"], terms["commitment"], CFG)
    torch.testing.assert_close(out["loss"], recon_total + terms["direct"] + terms["match"], atol=1e-4, rtol=1e-4)
    assert terms["direct"] > 0 and terms["match"] > 0


def test_adam_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = BrainTokenizer(CFG)
    batch = make_batch(4, (8, 4, 4), seed=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = model(batch, channel_dropout=False)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(out["loss"].item())
    assert np.mean(losses[-3:]) < 0.92 * losses[0], losses
    assert out["losses"]["pcc"] < 0.97  # the waveform, not only the spectrum, starts to fit


def test_quantizer_float32_under_autocast_and_explicit_sync() -> None:
    model = BrainTokenizer(CFG)
    assert not model.quantizer.rvq.layers[0]._codebook.use_ddp
    assert BrainTokenizer(CFG, sync_codebook=True).quantizer.rvq.layers[0]._codebook.use_ddp
    latents = torch.randn(2, CFG.n_latent, CFG.n_frames, CFG.d_model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quantized, indices, commitment = model.quantizer(latents)  # training mode: k-means init + EMA step
        assert quantized.dtype == commitment.dtype == torch.float32 and indices.dtype == torch.int64
        assert model.quantizer.rvq.codebooks.dtype == torch.float32
        model.eval()
        quantized, indices, _ = model.quantizer(latents)
        torch.testing.assert_close(model.quantizer.indices_to_codes(indices), quantized)


def test_package_round_trip(trained: BrainTokenizer, tmp_path) -> None:
    geo = make_geometry(12, 5, 10, seed=7)
    layout = SensorLayout(
        names=tuple(f"ch{i}" for i in range(27)),
        types=geo["types"].numpy().astype(np.int8),
        positions=geo["positions"].numpy(),
        orientations=geo["orientations"].numpy(),
    )
    signal = make_signal(3, 27, seed=7).numpy()
    save_package(trained, tmp_path / "pkg", preprocessing={"sfreq": 256.0}, metrics={"eeg/pcc": 0.5})
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == [
        "config.json", "metrics.json", "model.safetensors", "preprocessing.json"
    ]
    tok = Tokenizer.from_pretrained(tmp_path / "pkg", batch_size=2)
    assert tok.preprocessing == {"sfreq": 256.0} and tok.metrics == {"eeg/pcc": 0.5}
    assert json.loads((tmp_path / "pkg" / "config.json").read_text())["config"] == json.loads(json.dumps(CFG.to_dict()))
    for name, buf in trained.state_dict().items():
        assert torch.equal(buf, tok.model.state_dict()[name]), name
    indices = tok.encode(signal, layout)
    with torch.no_grad():
        expected = trained.encode(torch.from_numpy(signal), *(v.expand(3, *v.shape) for v in geo.values()))
    np.testing.assert_array_equal(indices, expected.numpy())
    np.testing.assert_array_equal(tok.encode(signal[1], layout), indices[1])
    assert tok.decode(indices, layout).shape == (3, 27, T)
    assert tok.decode(indices[0], layout.select(np.arange(4))).shape == (4, T)


def test_config_round_trip_and_presets() -> None:
    for name in ("tiny", "small", "base"):
        cfg = TokenizerConfig.preset(name)
        assert TokenizerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert (cfg.n_latent, cfg.n_frames, cfg.rvq_levels, cfg.hop) == (16, 8, 4, 64)
    with pytest.raises(ValueError, match="unknown field"):
        TokenizerConfig.from_dict({"d_modle": 3})
    assert bits_per_channel_second(TokenizerConfig.base(), 64) == 16 * 8 * 4 * 10 / (64 * 2.0)


def test_metrics() -> None:
    target = make_signal(2, 6)
    types = torch.tensor([[0, 0, 1, 2, 2, 0]] * 2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    metrics = ReconstructionMetrics(CFG.sfreq)
    metrics.update(target, target, types, mask)
    result = metrics.compute()
    assert {"eeg/mae", "meg/nmse", "eeg/pcc", "meg/logamp_alpha", "eeg/phase_gamma"} <= set(result)
    assert result["eeg/mae"] == 0 and result["meg/nmse"] < 1e-10 and abs(result["eeg/pcc"] - 1) < 1e-5
    assert abs(result["meg/phase_beta"]) < 1e-5

    usage = CodebookUsage(n_levels=2, codebook_size=4)
    usage.update(torch.tensor([[0, 1], [1, 1]]))
    usage.update(torch.tensor([[2, 1], [3, 1]]))
    stats = usage.compute()
    assert stats["usage_l0"] == 1.0 and stats["usage_l1"] == 0.25
    assert abs(stats["perplexity_l0"] - 4.0) < 1e-9 and abs(stats["perplexity_l1"] - 1.0) < 1e-9
