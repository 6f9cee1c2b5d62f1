"""Pretraining on real token shards (3 bundled recordings -> tiny tokenizer -> `tokenizer.encode`): segments,
loss goes down, the CLI fit -> export -> load path, 2-process DDP, and SIGKILL + ``--ckpt_path last`` resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from litdata import StreamingDataLoader, StreamingDataset

from data import WindowDataModule, prepare, window_dataset
from pretrain import (
    PretrainDataModule,
    PretrainModule,
    SegmentDataset,
    collate_segments,
    load_backbone,
    sample_mask,
)
from tokenizer.encode import encode_shards, read_token_manifest
from tokenizer.lightning import TokenizerModule
from tokenizer.package import save_package

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "pretrain_fit.py"


@pytest.fixture(scope="module")
def tokens(fixtures, tmp_path_factory) -> tuple[Path, Path]:
    """(token shard dir, tokenizer package): a 1-channel EEG of 349 windows, and 3- and 2-window recordings."""
    root = tmp_path_factory.mktemp("pretrain")
    shards, pkg, out = root / "shards", root / "tokenizer", root / "tokens"
    prepare([fixtures / "test_subsecond.edf", fixtures / "test.edf", fixtures / "sample_audvis_5s_raw.fif"], shards, progress=False)
    torch.manual_seed(0)
    module = TokenizerModule("tiny")
    module.configure_model()
    dm = WindowDataModule(str(shards), batch_size=64, max_channels=32)
    batch = dm._loader(window_dataset(shards), train=False).__iter__().__next__()
    module.model.train()
    with torch.no_grad():
        module.model(batch)  # k-means initialisation of the codebooks on real windows
    save_package(module.model.eval(), pkg, preprocessing=dm.preprocessing)
    encode_shards(pkg, shards, out, batch_size=64, progress=False)
    return out, pkg


def _run(*args, timeout=300) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _fit_args(tokens, pkg, run, *extra) -> list[str]:
    return ["fit", "-c", "pretrain/configs/tiny.yaml", "--data.tokens", str(tokens), "--model.tokenizer", str(pkg),
            "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", *extra]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_segments_are_consecutive_windows_of_one_recording(tokens):
    out, _ = tokens
    manifest = read_token_manifest(out)
    ds, windows = SegmentDataset(out, segment_windows=5), StreamingDataset(str(out))
    assert len(ds) == manifest["n_windows"]
    long = next(r for r in manifest["recordings"] if r["stop"] - r["start"] > 5)
    starts = set()
    for anchor in range(long["start"], long["stop"]):
        item = ds[anchor]
        first = item["start"]
        assert item["recording"] == long["recording"] and long["start"] <= first <= long["stop"] - 5
        assert item["indices"].shape == (16, 40, 4) and item["indices"].dtype == torch.int64 and bool(item["valid"].all())
        starts.add(first)
        if anchor in (long["start"] + 3, long["stop"] - 1):  # a segment is the windows first..first+4, in order
            for w in range(5):
                np.testing.assert_array_equal(item["indices"][:, 8 * w:8 * (w + 1)].numpy(), np.asarray(windows[first + w]["indices"]))
    assert starts == set(range(long["start"], long["stop"] - 4))  # every valid start once per epoch
    short = next(r for r in manifest["recordings"] if r["stop"] - r["start"] < 5)
    item = ds[short["start"]]
    n = short["stop"] - short["start"]
    assert int(item["valid"].sum()) == 8 * n and not item["valid"][8 * n:].any() and (item["indices"][:, 8 * n:] == 0).all()


def test_shuffled_epochs_are_full_permutations_not_blocks_of_one_recording(tokens):
    """A chunk stores recordings one after another; litdata's default shuffle (blocks of 256 items) would keep
    that order, so batches would come from one recording for tens of steps. Window and token loaders permute
    the whole chunk: the order yielded is uncorrelated with the stored order."""
    out, _ = tokens
    windows = window_dataset(out.parent / "shards", shuffle=True, seed=3)
    dm = PretrainDataModule(str(out), segment_windows=1, batch_size=1, seed=3)
    dm.setup("fit")
    order = [int(b["anchor"][0]) for b in dm.train_dataloader()]
    assert sorted(order) == list(range(len(order)))
    rho = np.corrcoef(np.arange(len(order)), order)[0, 1]
    assert abs(rho) < 0.3, f"yielded anchors follow the stored order (correlation {rho:.2f})"
    assert windows.item_shuffle_window == 0  # the window loader (tokenizer training) permutes the same way
    stored = {(it["recording"], float(it["t0_s"])): i for i, it in enumerate(window_dataset(out.parent / "shards"))}
    yielded = [stored[(b[0]["recording"], float(b[0]["t0_s"]))]
               for b in StreamingDataLoader(windows, batch_size=1, collate_fn=list)]
    assert sorted(yielded) == list(range(len(stored)))
    rho = np.corrcoef(np.arange(len(yielded)), yielded)[0, 1]
    assert abs(rho) < 0.3, f"yielded windows follow the stored order (correlation {rho:.2f})"


def _fixed_batch(out: Path) -> tuple[dict, torch.Tensor]:
    """Segments spread over the token shards, and one fixed mask over them."""
    ds = SegmentDataset(out, segment_windows=2)
    fixed = collate_segments([ds[i] for i in range(5, 354, 40)])
    return fixed, sample_mask(fixed["valid"], 16, 0.5, torch.Generator().manual_seed(1))


def _score_before_and_after_training(module: PretrainModule, out: Path, score, steps: int = 30):
    """``score()`` (eval mode, no grad) before and after ``steps`` training steps on the token shards -> (before,
    after, trainer). One torch thread: tiny matrices run several times faster that way on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module.model.eval()
        with torch.no_grad():
            before = score()
        module.model.train()
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, PretrainDataModule(str(out), segment_windows=2, batch_size=8))
        module.model.eval()
        with torch.no_grad():
            after = score()
    finally:
        torch.set_num_threads(threads)
    return before, after, trainer


def test_training_steps_lower_the_masked_loss(tokens):
    out, pkg = tokens
    L.seed_everything(0)
    module = PretrainModule(str(pkg), preset="tiny", lr=3e-3, warmup_steps=1, prior_init=False)
    fixed, mask = _fixed_batch(out)

    def fixed_loss() -> float:
        logits = module.model(fixed["indices"], mask, fixed["valid"])
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), fixed["indices"][mask].flatten()))

    before, after, _ = _score_before_and_after_training(module, out, fixed_loss)
    assert np.isfinite(before) and after < 0.9 * before, f"masked loss on a fixed batch {before:.3f} -> {after:.3f}"
    assert int(module.code_counts.sum()) > 0  # the unigram floor's histogram was counted


def test_regression_target_learns_the_masked_latents_and_survives_export(tokens, tmp_path):
    """regression_weight > 0: a head regresses the masked positions' codebook-space latents; on a fixed batch the
    cosine rises, and the exported package rebuilds the head (config field ``regression_head``)."""
    out, pkg = tokens
    L.seed_everything(0)
    module = PretrainModule(str(pkg), preset="tiny", lr=3e-3, warmup_steps=1, prior_init=False, regression_weight=1.0)
    assert module.config.regression_head
    fixed, mask = _fixed_batch(out)

    def fixed_cos() -> float:
        hidden = module.model.encode(fixed["indices"], mask, fixed["valid"])[mask]
        target = module.model.latents(fixed["indices"][mask])
        return float(torch.nn.functional.cosine_similarity(module.model.regress(hidden), target, dim=-1).mean())

    before, after, trainer = _score_before_and_after_training(module, out, fixed_cos)
    assert after > before + 0.1, f"latent cosine on a fixed batch {before:.3f} -> {after:.3f}"
    assert "train/latent_cos" in trainer.callback_metrics and "train/latent_cos_framecopy" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    from pretrain.package import export_run

    loaded = load_backbone(export_run(tmp_path / "run", tmp_path / "pkg"))
    assert loaded.model.config.regression_head and hasattr(loaded.model, "regress_head")
    assert torch.equal(loaded.model.regress_head.weight, module.model.regress_head.weight)
    with pytest.raises(ValueError, match="regression_weight"):
        PretrainModule(str(pkg), preset="tiny", regression_weight=-1.0)


def test_init_from_starts_a_run_at_an_exported_backbone_and_refuses_another_size(tokens, tmp_path):
    """--model.init_from PKG (continued / domain-adaptive pretraining): the new run's weights are the package's,
    fit skips the head prior, and a package of another size or tokenizer is refused naming what differs."""
    from pretrain.package import export_run
    from runkit.entry import OptionError

    out, pkg = tokens
    L.seed_everything(0)
    module = PretrainModule(str(pkg), preset="tiny", lr=3e-3, warmup_steps=1, prior_init=False)
    _, _, trainer = _score_before_and_after_training(module, out, lambda: 0.0, steps=3)
    trainer.save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    backbone = export_run(tmp_path / "run", tmp_path / "backbone")

    L.seed_everything(1)  # a fresh module would start elsewhere
    continued = PretrainModule(str(pkg), preset="tiny", init_from=str(backbone))
    ours, theirs = continued.model.state_dict(), module.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    head_before = continued.model.head.weight.detach().clone()
    _, _, _ = _score_before_and_after_training(continued, out, lambda: 0.0, steps=1)
    assert not torch.equal(continued.model.head.weight, head_before)  # it trains on from there

    with pytest.raises(OptionError, match=r"n_layers 2 \(package\) != 3"):
        PretrainModule(str(pkg), preset="tiny", overrides={"n_layers": 3}, init_from=str(backbone))
    with pytest.raises(OptionError, match="init_from"):
        PretrainModule(str(pkg), preset="tiny", init_from=str(tmp_path / "missing"))


def test_fit_starts_the_head_at_the_unigram_predictor_of_the_training_tokens(tokens):
    """prior_init: a fresh fit sets the head to log code frequencies (weight 0), so before learning anything
    the model predicts each level's most frequent training code everywhere and scores the unigram loss."""
    out, pkg = tokens
    ds = SegmentDataset(out, segment_windows=2)
    windows = StreamingDataset(str(out))
    codes = torch.stack([torch.as_tensor(np.asarray(windows[i]["indices"])) for i in range(len(windows))])  # [W, N, F, L]
    by_hand = torch.stack([torch.bincount(codes[..., lv].flatten(), minlength=ds.codebook_size) for lv in range(codes.shape[-1])])
    assert torch.equal(ds.code_counts(), by_hand)
    assert ds.code_counts(max_windows=10).sum(1).tolist() == [10 * codes[0, ..., 0].numel()] * codes.shape[-1]

    module = PretrainModule(str(pkg), preset="tiny", lr=0.0, weight_decay=0.0)  # lr 0: the first step changes nothing
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, PretrainDataModule(str(out), segment_windows=2, batch_size=4))
    batch = collate_segments([ds[i] for i in range(0, 300, 30)])
    mask = sample_mask(batch["valid"], 16, 0.5, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = module.model.eval()(batch["indices"], mask, batch["valid"])  # [M, L, K]
    assert torch.equal(logits.argmax(-1), by_hand.argmax(1)[None].expand(logits.shape[0], -1))
    freq = (by_hand.double() + 1) / (by_hand.sum(1, keepdim=True) + ds.codebook_size)
    targets = batch["indices"][mask]
    unigram_ce = -freq.log().gather(1, targets.T).mean()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), targets.flatten())
    assert abs(float(ce - unigram_ce)) < 1e-4


def test_kill_resume_matches_uninterrupted_run_and_exports(tokens, tmp_path):
    """SIGKILL after step 7 (checkpoints every 3 steps), resume with --ckpt_path last: steps 7..10 repeat the
    uninterrupted run's data and losses; then export the run and load the backbone package."""
    out, pkg = tokens
    args = ["--trainer.max_steps", "10", "--checkpoint_every_n_steps", "3", "--trainer.log_every_n_steps", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(rec), kill, *_fit_args(out, pkg, run, *args)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rec, kill, run in ((full / "rec", "0", full), (killed / "rec", "7", killed))]
    results = [p.communicate(timeout=300) for p in procs]
    assert procs[0].returncode == 0, results[0][1][-3000:]
    assert procs[1].returncode == -9, f"expected SIGKILL, got {procs[1].returncode}: {results[1][1][-3000:]}"
    assert [r["step"] for r in _records(killed / "rec" / "rank0.jsonl")] == list(range(1, 8))
    _run(SCRIPT, killed / "rec", "0", *_fit_args(out, pkg, killed, *args, "--ckpt_path", "last"))

    a, b = _records(full / "rec" / "rank0.jsonl"), _records(killed / "rec" / "rank0.jsonl")
    assert [r["step"] for r in a] == list(range(1, 11))
    assert [r["step"] for r in b] == [*range(1, 8), *range(7, 11)]  # resumed from the step-6 checkpoint
    resumed = {r["step"]: r for r in b[7:]}
    for r in a[6:]:
        assert resumed[r["step"]]["anchor"] == r["anchor"], f"step {r['step']}: the data loader did not resume in place"
        assert resumed[r["step"]]["loss"] == pytest.approx(r["loss"], rel=1e-4, abs=1e-5)
    for run in (full, killed):
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    np.testing.assert_allclose(np.load(full / "rec" / "weights_rank0.npy"), np.load(killed / "rec" / "weights_rank0.npy"), rtol=1e-4, atol=1e-5)
    assert not list((killed / "checkpoints").glob(".*partial"))

    _run("-m", "pretrain", "export", killed, "--out", tmp_path / "backbone")
    assert {p.name for p in (tmp_path / "backbone").iterdir()} == {"config.json", "model.safetensors"}
    package = load_backbone(tmp_path / "backbone")
    assert package.meta["training"]["global_step"] == 10 and package.tokenizer["path"] == str(pkg.resolve())
    flat = torch.cat([p.detach().flatten() for p in package.model.parameters()]).numpy()
    np.testing.assert_array_equal(flat, np.load(killed / "rec" / "weights_rank0.npy"))


def test_ddp_two_processes_disjoint_data_identical_weights_rank0_checkpoints(tokens, tmp_path):
    out, pkg = tokens
    rec, run = tmp_path / "rec", tmp_path / "run"
    _run(SCRIPT, rec, "0", *_fit_args(out, pkg, run, "--trainer.strategy", "ddp", "--trainer.devices", "2",
                                       "--trainer.max_steps", "4", "--checkpoint_every_n_steps", "2"))
    seen = [_records(rec / f"rank{r}.jsonl") for r in range(2)]
    anchors = [{a for s in ranks for a in s["anchor"]} for ranks in seen]
    assert all(len(s) == 4 for s in seen) and all(len(a) == 16 for a in anchors)
    assert not anchors[0] & anchors[1], "ranks read overlapping samples"
    assert seen[0][0]["loss"] != seen[1][0]["loss"]  # different data, so the weight check below is not vacuous
    w0, w1 = np.load(rec / "weights_rank0.npy"), np.load(rec / "weights_rank1.npy")
    np.testing.assert_array_equal(w0, w1)
    saves = (rec / "saves_rank0.txt").read_text().splitlines()
    assert not (rec / "saves_rank1.txt").exists(), "rank 1 wrote a checkpoint"
    assert saves and all(s.startswith("AtomicCheckpointIO ") for s in saves)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_two_nodes_simulated_with_torchrun_train_to_the_same_weights(tokens, tmp_path):
    """Two ``torchrun --nnodes 2 --node_rank {0,1} --master_addr 127.0.0.1`` processes (one CPU device each,
    gloo) run the same ``pretrain fit ... --trainer.num_nodes 2`` command (through the recorder script)."""
    out, pkg = tokens
    rec, run = tmp_path / "rec", tmp_path / "run"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [*_fit_args(out, pkg, run, "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
                      "--trainer.max_steps", "3")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(r),
                               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
                               str(SCRIPT), str(rec), "0", *cmd],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in results[1][1] + results[1][0]
    seen = [{a for r in _records(rec / f"rank{k}.jsonl") for a in r["anchor"]} for k in range(2)]
    assert len(seen[0]) == len(seen[1]) == 12 and not seen[0] & seen[1]
    np.testing.assert_array_equal(np.load(rec / "weights_rank0.npy"), np.load(rec / "weights_rank1.npy"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
