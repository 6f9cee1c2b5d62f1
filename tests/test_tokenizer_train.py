"""The tokenizer trained through Lightning on real windows: loss goes down, DDP keeps codebooks in
sync, and fit -> export -> encode -> eval works from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from data import WindowDataModule, prepare, window_dataset
from tokenizer import Tokenizer
from tokenizer.lightning import TokenizerModule

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "shards"
    # 1-channel EEG (698 s), 132-channel EEG, and MEG+EEG: mixed channel counts in one set
    prepare([fixtures / "test_subsecond.edf", fixtures / "test.edf", fixtures / "sample_audvis_5s_raw.fif"], out, progress=False)
    return out


def _run(*args, cwd=REPO, timeout=600):
    res = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_training_steps_on_real_windows_lower_the_loss(shards):
    """The loss on a fixed batch of real windows (eval mode, no dropout) falls after 40 steps."""
    L.seed_everything(0)
    dm = WindowDataModule(str(shards), batch_size=16, max_channels=32)
    dm.setup("fit")
    fixed = next(iter(dm._loader(window_dataset(shards), train=False)))
    module = TokenizerModule("tiny", lr=3e-3, warmup_steps=1)
    module.configure_model()
    module.model.train()
    module.model(fixed)  # k-means initialisation of the codebooks from real data

    def fixed_loss() -> float:
        module.model.eval()
        with torch.no_grad():
            return float(module.model(fixed, channel_dropout=False)["loss"])

    before = fixed_loss()
    trainer = L.Trainer(accelerator="cpu", max_steps=40, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    after = fixed_loss()
    assert after < 0.97 * before, f"loss on a fixed batch {before:.3f} -> {after:.3f}"


def test_fit_warns_when_the_batch_is_too_small_for_the_dead_code_threshold(shards):
    """`tiny` re-seeds codes below 2 vectors per step; a batch of 1 window gives each of its 256 codes 0.5 on average."""
    dm = WindowDataModule(str(shards), batch_size=1, max_channels=8)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match=r"threshold_ema_dead_code 2 is not below the mean 0.50 .*batch_size"):
        trainer.fit(TokenizerModule("tiny", warmup_steps=1), dm)


def test_ddp_two_processes_keep_codebooks_identical(shards, tmp_path):
    for mode in ("auto", "off"):
        (tmp_path / mode).mkdir()
        _run(str(REPO / "tests" / "scripts" / "tokenizer_ddp.py"), str(shards), str(tmp_path / mode), mode)
    synced = [np.load(tmp_path / "auto" / f"rank{r}.npy") for r in range(2)]
    unsynced = [np.load(tmp_path / "off" / f"rank{r}.npy") for r in range(2)]
    np.testing.assert_array_equal(synced[0], synced[1])
    assert not np.allclose(unsynced[0], unsynced[1]), "ranks saw the same data: the sync check would be vacuous"
    # the lr schedule's share of the time cap is rank 0's on both ranks (each rank's own clock would differ)
    fractions = [np.load(tmp_path / "auto" / f"time_fraction_rank{r}.npy") for r in range(2)]
    assert len(fractions[0]) == 4 and fractions[0][-1] > 0
    np.testing.assert_array_equal(fractions[0], fractions[1])


def test_time_cap_anneals_the_lr(shards):
    """A fit stopped by --trainer.max_time ends at the low lr, though it ran a fraction of max_steps."""
    dm = WindowDataModule(str(shards), batch_size=4, max_channels=16)
    module = TokenizerModule("tiny", lr=1e-3, warmup_steps=1, min_lr_ratio=0.05)
    module.time_budget.every = 1
    trainer = L.Trainer(accelerator="cpu", max_steps=100_000, max_time={"seconds": 10}, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert 2 < trainer.global_step < 1_000, trainer.global_step
    assert module.time_budget.fraction > 0.8
    assert lr < 0.2 * 1e-3, f"lr {lr:.2e} at the time cap: the schedule did not follow the clock"


def test_cli_fit_export_encode_eval(shards, tmp_path):
    run, pkg, tokens, plots = tmp_path / "run", tmp_path / "pkg", tmp_path / "tokens", tmp_path / "plots"
    _run("-m", "tokenizer", "fit", "-c", "tokenizer/configs/tiny.yaml", "--data.train", str(shards),
         "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "2", "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false")
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    _run("-m", "tokenizer", "export", str(run), "--out", str(pkg))
    assert {p.name for p in pkg.iterdir()} == {"config.json", "model.safetensors", "preprocessing.json", "metrics.json"}
    assert json.loads((pkg / "preprocessing.json").read_text())["sfreq"] == 256.0
    assert json.loads((pkg / "metrics.json").read_text())["training"]["global_step"] == 6

    _run("-m", "tokenizer", "encode", "--tokenizer", str(pkg), "--shards", str(shards), "--out", str(tokens), "--quiet")
    tds, wds = window_dataset(tokens), window_dataset(shards)
    assert len(tds) == len(wds)
    m = json.loads((tokens / "manifest.json").read_text())
    assert m["token_shape"] == [16, 8, 4] and m["kind"] == "tokens"
    # the token shards hold exactly what the Python API gives for the same window
    tok = Tokenizer.from_pretrained(pkg)
    for i in (0, len(wds) - 1):
        w, t = wds[i], tds[i]
        assert t["indices"].dtype == np.int16 and t["indices"].shape == (16, 8, 4)
        assert t["recording"] == w["recording"] and t["t0_s"] == w["t0_s"]
        layout_types = torch.as_tensor(w["types"].astype(np.int64))[None]
        direct = tok.model.encode(torch.as_tensor(w["signal"].astype(np.float32))[None], layout_types,
                                  torch.as_tensor(w["positions"])[None], torch.as_tensor(w["orientations"])[None])
        np.testing.assert_array_equal(direct[0].numpy(), t["indices"])
    rec_ranges = [(r["start"], r["stop"]) for r in m["recordings"]]
    assert rec_ranges[0][0] == 0 and rec_ranges[-1][1] == len(tds)

    res = _run("-m", "tokenizer", "eval", "--tokenizer", str(pkg), "--shards", str(shards), "--plots", str(plots),
               "--max-windows", "64", "--quiet", "--save-to-package")
    metrics = json.loads(res.stdout)
    for key in ("eeg/pcc", "eeg/nmse", "eeg/phase_alpha", "eeg/logamp_beta", "usage_l0", "perplexity_l3", "bits_per_channel_second"):
        assert key in metrics and np.isfinite(metrics[key]), key
    by_hop = metrics["eeg/nmse_by_hop"]  # one value per hop of the window (tiny: 8 hops of 64 samples)
    assert len(by_hop) == 8 and all(np.isfinite(v) and v > 0 for v in by_hop)
    assert {p.name for p in plots.iterdir()} == {"reconstruction.png", "spectra.png", "codebook_usage.png"}
    assert "eval" in json.loads((pkg / "metrics.json").read_text())


def test_export_of_missing_run_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tokenizer", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "p")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and "no checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p").exists()
