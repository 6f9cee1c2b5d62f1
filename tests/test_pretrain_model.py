"""The masked-token backbone on its own: shapes, per-sample masks, what the model can and cannot see,
the unigram floor, the lr schedules, and the PretrainModule step on a real (untrained) tokenizer package."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.lightning import PretrainModule, param_groups
from pretrain.model import (
    PRESETS,
    MaskedTokenModel,
    apply_rope,
    build_config,
    copy_baselines,
    rope_tables,
    sample_mask,
    unigram_floor_accuracy,
)
from runkit.schedule import lr_factor
from tokenizer import BrainTokenizer, TokenizerConfig
from tokenizer.package import save_package

SIZES = {"n_latent": 16, "rvq_levels": 4, "codebook_size": 64, "codebook_dim": 8}


def _model(embedding: str = "codebook") -> MaskedTokenModel:
    torch.manual_seed(0)
    cfg = build_config("tiny", {"embedding": embedding}, **SIZES)
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


def test_codebook_head_scores_the_code_whose_vector_the_hidden_state_carries():
    """``head="codebook"``: with W_l the identity, a hidden state equal to code k's vector of level l scores k
    highest at that level (the tie to the frozen codebooks), for every level and code; the unigram start holds."""
    torch.manual_seed(0)
    cfg = build_config("tiny", {"head": "codebook", "d_model": 8, "n_heads": 2}, **SIZES)
    codebooks = torch.nn.functional.normalize(torch.randn(4, 64, 8), dim=-1) * torch.tensor([1.0, 0.5, 0.2, 0.1])[:, None, None]
    model = MaskedTokenModel(cfg, codebooks)
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(8).repeat(4, 1))
    for level in range(4):
        logits = model.logits(codebooks[level])  # [64 codes as hidden states, L, K]
        assert torch.equal(logits[:, level].argmax(-1), torch.arange(64))
    counts = torch.randint(1, 50, (4, 64))
    model.init_head_prior(counts)
    start = model.logits(torch.randn(5, 8)).log_softmax(-1)
    torch.testing.assert_close(start, (((counts + 1) / (counts.sum(1, keepdim=True) + 64)).log().float()).expand(5, 4, 64))
    with pytest.raises(ValueError, match="head 'codebook' needs embedding 'codebook'"):
        build_config("tiny", {"head": "codebook", "embedding": "learned"}, **SIZES)


def test_mask_is_fresh_per_sample_half_of_valid_positions_never_padding():
    valid = torch.ones(6, 20, dtype=torch.bool)
    valid[5, 12:] = False
    mask = sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(3))
    assert mask.shape == (6, 16, 20)
    assert mask[:5].flatten(1).sum(1).tolist() == [160] * 5 and int(mask[5].sum()) == 16 * 12 // 2
    assert not mask[5, :, 12:].any()
    assert len({tuple(m.flatten().tolist()) for m in mask[:5]}) == 5  # one fresh mask per sample
    assert not torch.equal(mask, sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(4)))


def _runs(frames: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for v in frames.tolist() + [False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


@pytest.mark.parametrize("mode", ["frames", "spans"])
def test_frame_and_span_masks_hide_whole_frames_fresh_per_sample(mode):
    valid = torch.ones(6, 40, dtype=torch.bool)
    valid[5, 13:] = False
    mask = sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(3), mode=mode, span=4)
    assert mask.shape == (6, 16, 40)
    frames = mask[:, 0]
    assert torch.equal(mask, frames[:, None].expand_as(mask))  # all latents of a frame together
    assert frames.sum(1).tolist() == [20] * 5 + [6] and not frames[5, 13:].any()
    assert len({tuple(f.tolist()) for f in frames[:5]}) == 5
    runs = [_runs(f) for f in frames[:5]]
    if mode == "spans":  # blocks of 4 from a random offset: at most 20 // 4 + 2 runs, mostly of 4 frames or more
        assert all(len(r) <= 7 for r in runs) and sum(x for r in runs for x in r if x >= 4) >= 0.7 * 100
    else:  # independent frames: many short runs
        assert sum(len(r) for r in runs) / 5 > 7
    assert sample_mask(valid[:, :1], 16, 0.5, mode=mode).sum().item() == 6 * 16  # a 1-frame sample still masks it
    with pytest.raises(ValueError, match="mask mode"):
        sample_mask(valid, 16, 0.5, mode="blocks")


def _copy_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 samples x 3 latents x 4 frames x 2 levels; sample 1 has a padding frame 3 (see the test for the sums)."""
    lv0 = torch.tensor([[1, 1, 5, 2], [1, 3, 5, 2], [2, 3, 6, 7]])
    lv1 = torch.tensor([[0, 0, 0, 0], [9, 9, 9, 9], [9, 8, 8, 8]])
    one = torch.stack([lv0, lv1], -1)  # [N, T, L]
    indices = torch.stack([one, one])
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    for n, t in ((0, 1), (2, 1), (0, 2), (1, 2), (2, 2), (1, 3)):
        mask[0, n, t] = True
    mask[1, 0, 1] = mask[1, 0, 2] = True
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    return indices, mask, valid


def test_copy_baselines_against_hand_computed_values():
    indices, mask, valid = _copy_case()
    out = copy_baselines(indices, mask, valid, fallback=torch.tensor([5, 9]))
    # spatial (majority of the visible latents of the frame, smallest code on ties, else fallback (5, 9)):
    #   sample 0: (0,1)->(3,9) vs (1,0) ww; (2,1)->(3,9) vs (3,8) rw; frame 2 all masked -> (5,9): (5,0) rw,
    #   (5,9) rr, (6,8) ww; (1,3)->tie (2|7, 0|8)->(2,0) vs (2,9) rw. sample 1: (0,1)->(3, 8|9->8) vs (1,0) ww;
    #   (0,2)->(5|6->5, 8|9->8) vs (5,0) rw.  level 0: 5/8, level 1: 1/8; defined at 5 of 8.
    torch.testing.assert_close(out["spatial"], torch.tensor([5 / 8, 1 / 8]))
    assert float(out["spatial_cover"]) == pytest.approx(5 / 8)
    # frame copy (same latent, nearest visible frame, the previous one on ties, padding never visible):
    #   sample 0: (0,1)<-t0 (1,0) rr; (2,1)<-t0 (2,9) vs (3,8) ww; (0,2)<-t3 (2,0) vs (5,0) wr; (1,2)<-t1 (3,9) vs
    #   (5,9) wr; (2,2)<-t3 (7,8) vs (6,8) wr; (1,3)<-t1 (3,9) vs (2,9) wr. sample 1: (0,1) tie t0|t2 -> t0 (1,0) rr;
    #   (0,2)<-t0 (t3 is padding) (1,0) vs (5,0) wr.  level 0: 2/8, level 1: 7/8.
    torch.testing.assert_close(out["frame"], torch.tensor([2 / 8, 7 / 8]))
    assert float(out["frame_cover"]) == 1.0 and float(out["n"]) == 8
    # no visible frame of that latent at all -> the fallback
    whole = torch.ones(1, 3, 4, dtype=torch.bool)
    empty = copy_baselines(indices[:1], whole, None, fallback=torch.tensor([5, 9]))
    torch.testing.assert_close(empty["frame"], (indices[0].flatten(0, 1) == torch.tensor([5, 9])).float().mean(0))
    assert float(empty["frame_cover"]) == 0.0 and float(empty["spatial_cover"]) == 0.0


def test_frame_masks_remove_the_spatial_copy_and_spans_weaken_the_frame_copy():
    """Tokens whose 16 latents share a code per frame, with codes that change slowly in time: random masking lets
    the spatial copy score 100%, whole frames take that away, and spans also push the frame copy down."""
    g = torch.Generator().manual_seed(0)
    per_frame = torch.randint(0, 50, (8, 40 // 4), generator=g).repeat_interleave(4, dim=1)  # a new code every 4 frames
    indices = per_frame[:, None, :, None].expand(8, 16, 40, 2).clone()
    valid = torch.ones(8, 40, dtype=torch.bool)
    fallback = torch.tensor([0, 0])
    acc = {m: copy_baselines(indices, sample_mask(valid, 16, 0.5, torch.Generator().manual_seed(1), mode=m, span=4), valid, fallback)
           for m in ("random", "frames", "spans")}
    assert float(acc["random"]["spatial"][0]) == 1.0
    assert float(acc["frames"]["spatial_cover"]) == 0.0 and float(acc["spans"]["spatial_cover"]) == 0.0
    assert float(acc["spans"]["frame"][0]) < float(acc["frames"]["frame"][0]) - 0.1


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
    # a spent time budget puts the schedule at its end; warm-up stays step-based
    assert lr_factor(20, 100, 10, "cosine", 0.1, 0.2, time_fraction=1.0) == pytest.approx(0.1)
    assert lr_factor(20, 100, 10, "wsd", 0.0, 0.2, time_fraction=0.9) == pytest.approx(0.5)
    assert lr_factor(5, 100, 10, "cosine", 0.1, 0.2, time_fraction=1.0) == lr_factor(5, 100, 10, "cosine", 0.1, 0.2)
    cos = [lr_factor(s, 100, 10, "cosine", 0.1, 0.2) for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(cos[9:], cos[10:], strict=False))
    wsd = [lr_factor(s, 100, 10, "wsd", 0.0, 0.2) for s in range(101)]
    assert wsd[10:80] == [1.0] * 70 and wsd[90] == pytest.approx(0.5) and wsd[100] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(20, 100, 10, "linear", 0.0, 0.2)


def test_presets_have_the_published_sizes_and_the_tokenizers_names():
    assert {k: (v["d_model"], v["n_layers"]) for k, v in PRESETS.items()} == {
        "tiny": (32, 2), "small": (256, 8), "base": (512, 12), "large": (1024, 24)}
    for name in ("tiny", "small", "base"):  # one name, one scale in both stages: tiny is the d32 CPU-test size
        assert TokenizerConfig.preset(name) and build_config(name, **SIZES).d_model == PRESETS[name]["d_model"]
    assert TokenizerConfig.tiny().d_model == PRESETS["tiny"]["d_model"] == 32
    with pytest.raises(ValueError, match=r"unknown; choose one of 'tiny' \(d_model 32, 2 layers\), 'small'"):
        build_config("huge", **SIZES)
    with pytest.raises(ValueError, match="'test' was renamed to 'tiny' \\(d_model 32"):  # never silently another size
        build_config("test", **SIZES)
    assert build_config(**SIZES).d_model == 256  # the default size is unchanged: now called small
    with pytest.raises(ValueError, match="unknown field"):
        build_config("tiny", {"width": 3}, **SIZES)


def test_module_step_logs_the_copy_baselines_beside_the_floor(tmp_path):
    torch.manual_seed(0)
    save_package(BrainTokenizer(TokenizerConfig.tiny()), tmp_path / "pkg")
    module = PretrainModule(str(tmp_path / "pkg"), preset="tiny", mask_mode="frames")
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    g = torch.Generator().manual_seed(0)
    batch = {"indices": torch.randint(0, 4, (2, 16, 16, 4), generator=g), "valid": torch.ones(2, 16, dtype=torch.bool)}
    module.code_counts[:, 2] = 5  # floor code 2 on every level
    module._step(batch, 0, "val")
    mask = module._mask(batch, 0, 1)
    assert torch.equal(mask, mask[:, :1].expand_as(mask))  # mask_mode reaches the sampler
    expected = copy_baselines(batch["indices"], mask, batch["valid"], torch.full((4,), 2))
    for lv in range(4):
        assert logged[f"val/spatial_acc_l{lv}"] == pytest.approx(float(expected["spatial"][lv]))
        assert logged[f"val/framecopy_acc_l{lv}"] == pytest.approx(float(expected["frame"][lv]))
        assert f"val/floor_acc_l{lv}" in logged and f"val/acc_l{lv}" in logged
    assert logged["val/spatial_cover"] == 0.0 and logged["val/framecopy_cover"] == 1.0
    with pytest.raises(ValueError, match="mask_mode"):
        PretrainModule(str(tmp_path / "pkg"), preset="tiny", mask_mode="blocks")


def test_module_loads_frozen_codebooks_and_excludes_norms_from_weight_decay(tmp_path):
    torch.manual_seed(0)
    tok = BrainTokenizer(TokenizerConfig.tiny())
    save_package(tok, tmp_path / "pkg")
    module = PretrainModule(str(tmp_path / "pkg"), preset="tiny", weight_decay=0.1)
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


def test_checkpoints_written_under_the_old_preset_names_load_at_their_own_size(tmp_path):
    """Checkpoints record the preset name in their hyper-parameters; those written before the rename say ``test``
    (now ``tiny``) or ``tiny`` (then d256, now ``small``). They load at the size of their recorded backbone config;
    a module of another size refuses them by name."""
    import lightning

    from pretrain.lightning import BACKBONE_KEY, checkpoint_preset

    save_package(BrainTokenizer(TokenizerConfig.tiny()), tmp_path / "pkg")

    def old_checkpoint(module: PretrainModule, preset: str, overrides: dict | None) -> str:
        hp = {**module.hparams, "preset": preset, "overrides": overrides}
        path = tmp_path / f"{preset}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp, BACKBONE_KEY: module.config.to_dict(),
                    "pytorch-lightning_version": lightning.__version__}, path)
        return str(path)

    torch.manual_seed(0)
    d32 = PretrainModule(str(tmp_path / "pkg"), preset="tiny")
    loaded = PretrainModule.load_from_checkpoint(old_checkpoint(d32, "test", None))
    assert loaded.hparams.preset == "tiny" and loaded.config == d32.config
    torch.testing.assert_close(loaded.state_dict(), d32.state_dict())
    d256 = PretrainModule(str(tmp_path / "pkg"), preset="small", overrides={"n_layers": 1})  # an old `tiny` + overrides
    loaded = PretrainModule.load_from_checkpoint(old_checkpoint(d256, "tiny", {"n_layers": 1}))
    assert loaded.config == d256.config
    torch.testing.assert_close(loaded.state_dict(), d256.state_dict())
    assert checkpoint_preset({**d256.config.to_dict(), "n_layers": 8}, {"preset": "tiny"}) == {"preset": "small"}
    with pytest.raises(ValueError, match="the former 'tiny' is now 'small'.*--model.overrides"):
        d32.on_load_checkpoint({BACKBONE_KEY: d256.config.to_dict()})  # resuming with the wrong size
