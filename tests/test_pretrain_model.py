"""The masked-token backbone on its own: shapes, per-sample masks, what the model can and cannot see,
the unigram floor, the lr schedules, and the PretrainModule step on a real (untrained) tokenizer package."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.lightning import PretrainModule, lr_factor, param_groups
from pretrain.model import (
    PRESETS,
    MaskedTokenModel,
    apply_rope,
    build_config,
    rope_tables,
    sample_mask,
    unigram_floor_accuracy,
)
from tokenizer import BrainTokenizer, TokenizerConfig
from tokenizer.package import save_package

SIZES = {"n_latent": 16, "rvq_levels": 4, "codebook_size": 64, "codebook_dim": 8}


def _model(embedding: str = "codebook") -> MaskedTokenModel:
    torch.manual_seed(0)
    cfg = build_config("test", {"embedding": embedding}, **SIZES)
    return MaskedTokenModel(cfg, torch.randn(4, 64, 8) if embedding == "codebook" else None).eval()


def _indices(b: int = 3, t: int = 24) -> torch.Tensor:
    return torch.randint(0, 64, (b, 16, t, 4), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("embedding", ["codebook", "learned"])
def test_shapes_and_finite_loss(embedding):
    model, idx = _model(embedding), _indices()
    valid = torch.ones(3, 24, dtype=torch.bool)
    mask = sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(0))
    assert model.encode(idx, mask, valid).shape == (3, 16, 24, 32)
    logits = model(idx, mask, valid)
    assert logits.shape == (int(mask.sum()), 4, 64)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[mask].flatten())
    assert torch.isfinite(loss) and abs(loss.item() - math.log(64)) < 1.0  # near-uniform at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    if embedding == "codebook":
        assert not model.codebooks.requires_grad


def test_mask_is_fresh_per_sample_half_of_valid_positions_never_padding():
    valid = torch.ones(6, 20, dtype=torch.bool)
    valid[5, 12:] = False
    mask = sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(3))
    assert mask.shape == (6, 16, 20)
    assert mask[:5].flatten(1).sum(1).tolist() == [160] * 5 and int(mask[5].sum()) == 16 * 12 // 2
    assert not mask[5, :, 12:].any()
    assert len({tuple(m.flatten().tolist()) for m in mask[:5]}) == 5  # one fresh mask per sample
    assert not torch.equal(mask, sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(4)))


def test_masked_positions_and_padding_frames_are_hidden_from_the_model():
    model, idx = _model(), _indices(2, 24)
    valid = torch.ones(2, 24, dtype=torch.bool)
    valid[1, 16:] = False
    mask = sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[mask] = (changed[mask] + 1) % 64  # new codes only where masked ...
    changed[1, :, 16:] = (changed[1, :, 16:] + 7) % 64  # ... and in padding frames
    with torch.no_grad():
        h0, h1 = model.encode(idx, mask, valid), model.encode(changed, mask, valid)
    torch.testing.assert_close(h0[0], h1[0])
    torch.testing.assert_close(h0[1, :, :16], h1[1, :, :16])
    unmasked = idx.clone()
    unmasked[~mask] = (unmasked[~mask] + 1) % 64
    with torch.no_grad():
        assert not torch.allclose(h0, model.encode(unmasked, mask, valid))  # visible codes do matter


def test_rope_scores_depend_only_on_relative_time():
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    cos, sin = rope_tables(64, 16, 10000.0, torch.device("cpu"))

    def score(i: int, j: int) -> float:
        return float((apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum())

    assert score(3, 1) == pytest.approx(score(40, 38), rel=1e-4, abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 9), rel=1e-3)


def test_unigram_floor_on_a_known_histogram():
    counts = torch.tensor([[5, 1, 0, 0], [0, 0, 2, 9]])  # level 0: code 0 most frequent, level 1: code 3
    targets = torch.tensor([[0, 3], [0, 2], [1, 3], [0, 3]])
    torch.testing.assert_close(unigram_floor_accuracy(counts, targets), torch.tensor([0.75, 0.75]))
    assert unigram_floor_accuracy(counts, targets[:0]).tolist() == [0.0, 0.0]


def test_lr_schedules():
    cos = [lr_factor(s, 100, 10, "cosine", 0.1, 0.2) for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:], strict=False))
    wsd = [lr_factor(s, 100, 10, "wsd", 0.0, 0.2) for s in range(101)]
    assert wsd[10:80] == [1.0] * 70 and wsd[90] == pytest.approx(0.5) and wsd[100] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(20, 100, 10, "linear", 0.0, 0.2)


def test_presets_have_the_published_sizes():
    assert {k: (v["d_model"], v["n_layers"]) for k, v in PRESETS.items() if k != "test"} == {
        "tiny": (256, 8), "base": (512, 12), "large": (1024, 24)}
    with pytest.raises(ValueError, match="preset"):
        build_config("huge", **SIZES)
    with pytest.raises(ValueError, match="unknown field"):
        build_config("test", {"width": 3}, **SIZES)


def test_module_loads_frozen_codebooks_and_excludes_norms_from_weight_decay(tmp_path):
    torch.manual_seed(0)
    tok = BrainTokenizer(TokenizerConfig.tiny())
    save_package(tok, tmp_path / "pkg")
    module = PretrainModule(str(tmp_path / "pkg"), preset="test", weight_decay=0.1)
    torch.testing.assert_close(module.model.codebooks, tok.quantizer.rvq.codebooks.detach())
    assert module.config.codebook_size == 256 and module.config.n_latent == 16
    names = {id(p): n for n, p in module.model.named_parameters()}
    groups = param_groups(module.model, 0.1)
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert "codebooks" not in decayed | plain  # frozen
    assert all(("norm" in n or "embed" in n or n.endswith("bias")) for n in plain)
    assert all(n.endswith("weight") and "norm" not in n for n in decayed) and "blocks.0.temporal.qkv.weight" in decayed
