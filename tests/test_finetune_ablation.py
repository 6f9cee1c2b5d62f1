"""Fine-tuning pieces of the pretraining ablation: the random-init control arm, multi-class AUROC, and
fine-tuning under 2-process DDP (gloo, CPU, real processes) giving the metrics one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from finetune.lightning import FinetuneDataModule, FinetuneModule
from finetune.metrics import ClassificationMetrics
from tests.finetune_support import DEMO_TASK, REPO, fit_args


def _built(model_registry, backbone_init: str) -> FinetuneModule:
    dm = FinetuneDataModule(str(DEMO_TASK), batch_size=4)
    dm.setup("fit")
    module = FinetuneModule(backbone=str(model_registry["backbone"]), mode="full", backbone_init=backbone_init)
    module.build(dm.classes, dm.train_class_counts(), dm.task.preprocessing, dm.channels(), dm.channel_counts(), dm.facts())
    return module


def test_random_init_arm_reinitialises_the_backbone_but_keeps_tokenizer_and_codebooks(model_registry):
    from pretrain.package import load_backbone

    pretrained = load_backbone(model_registry["backbone"]).model.state_dict()
    torch.manual_seed(0)
    a = _built(model_registry, "random").model
    torch.manual_seed(0)
    b = _built(model_registry, "random").model
    same = _built(model_registry, "pretrained").model
    for k, v in pretrained.items():
        torch.testing.assert_close(same.backbone.state_dict()[k], v)
        torch.testing.assert_close(a.backbone.state_dict()[k], b.backbone.state_dict()[k])  # seeded
    torch.testing.assert_close(a.backbone.codebooks, pretrained["codebooks"])
    changed = [k for k, v in pretrained.items() if k != "codebooks" and v.numel() > 1 and v.std() > 0
               and not torch.equal(a.backbone.state_dict()[k], v)]
    assert len(changed) >= 10  # every block's weights are fresh
    for k, v in same.tokenizer.state_dict().items():
        torch.testing.assert_close(a.tokenizer.state_dict()[k], v)
    assert a is not same
    with pytest.raises(ValueError, match="backbone_init"):
        FinetuneModule(backbone="x", backbone_init="zeros")


def test_multiclass_auroc_is_the_one_vs_rest_macro_average():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(40, 3, generator=g), -1)
    target = torch.arange(40) % 3
    m = ClassificationMetrics(3)
    m.update(probs, target)
    got = m.compute()["auroc"]
    assert got == pytest.approx(roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr", average="macro"), abs=1e-6)


def _odd_task(tmp_path: Path) -> Path:
    """The demo task with 2 more `natus` segments: 14 items, which split (seed 0) into 8 / 3 / 3."""
    rows = DEMO_TASK.read_text().splitlines()
    rows += ["test_subsecond.edf,natus,690,691", "test_subsecond.edf,natus,600,601"]
    fixtures = DEMO_TASK.parent.resolve()
    out = tmp_path / "odd_task.csv"
    out.write_text("\n".join([rows[0], *(f"{fixtures / r.split(',', 1)[0]},{r.split(',', 1)[1]}" for r in rows[1:])]) + "\n")
    return out


def _fit(task: Path, run: Path, backbone: Path, *extra: str) -> None:
    args = fit_args(task, backbone, run, "full", "--trainer.max_epochs", "1", "--model.warmup_steps", "1", *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "finetune", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_ddp_two_processes_fit_and_test_with_the_metrics_of_one_process(model_registry, tmp_path):
    """``finetune fit --trainer.strategy ddp --trainer.devices 2`` (gloo, two real processes): training runs, the
    chosen checkpoint is tested with every item counted exactly once (3 validation and 3 test items over 2 ranks:
    Lightning's default sampler would repeat one), and its val/test metrics equal those of the same checkpoint
    evaluated in one process."""
    run, task = tmp_path / "ddp", _odd_task(tmp_path)
    _fit(task, run, model_registry["backbone"], "--trainer.strategy", "ddp", "--trainer.devices", "2")
    ddp = json.loads((run / "test_metrics.json").read_text())
    assert Path(ddp["best_checkpoint"]).is_file()
    n_test = ddp["facts"]["split_sizes"]["test"]
    assert n_test % 2 == 1 and np.sum(ddp["test"]["confusion_matrix"]) == n_test
    assert np.sum(ddp["val"]["confusion_matrix"]) == ddp["facts"]["split_sizes"]["val"] == 3

    L.seed_everything(0)
    dm = FinetuneDataModule(str(task), batch_size=4)
    module = FinetuneModule(backbone=str(model_registry["backbone"]), mode="full")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path / "one")  # splits.json goes there
    for stage, fn in (("val", trainer.validate), ("test", trainer.test)):
        fn(module, datamodule=dm, ckpt_path=ddp["best_checkpoint"], verbose=False)
        one = module.last_eval[stage]
        assert one["confusion_matrix"] == ddp[stage]["confusion_matrix"]
        for key in ("balanced_accuracy", "cohen_kappa", "auroc", "f1_weighted"):
            assert one[key] == pytest.approx(ddp[stage][key], abs=1e-6), (stage, key)


def test_ablation_arms_share_data_seed_and_budget(tmp_path):
    """bench/finetune_ablation.py: every arm of a seed gets the same data, seeds and budget options; only the model
    options differ (the random arm adds exactly ``backbone_init random``)."""
    import argparse

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import finetune_ablation as fa
    finally:
        sys.path.remove(str(REPO / "bench"))
    variants = fa.parse_variants(["tok=--model.train_tokenizer true"])
    others = fa.parse_variants([f"brainomni={tmp_path / 'bo'}"])
    arms = fa.arm_list(list(fa.ARMS), variants, others)
    assert arms == ["pretrained", "random", "eegnet", "shallow", "pretrained+tok", "random+tok", "brainomni"]
    a = argparse.Namespace(backbone=tmp_path / "bb", tokenizer=None, mode="full", foundation_args="", variants=variants,
                           others=others, max_epochs=30, patience=10, max_time="00:00:15:00", warmup=10,
                           fit_args="--data.offset_augment 1.5")

    def opts(arm: str) -> dict[str, str]:
        args = fa.fit_args(tmp_path / "task.fif", arm, 1, tmp_path / "run", a)
        return {k: v for k, v in zip(args, args[1:], strict=False) if k.startswith("--")}

    budget_keys = ("--data.path", "--seed_everything", "--data.seed", "--trainer.max_epochs", "--early_stopping_patience",
                   "--trainer.max_time", "--model.warmup_steps", "-c", "--data.offset_augment")
    all_opts = {arm: opts(arm) for arm in arms}
    for key in budget_keys:
        assert len({o.get(key) for o in all_opts.values()}) == 1, key
    assert all_opts["eegnet"]["--data.offset_augment"] == "1.5"  # --fit-args reach every arm, baselines too
    assert set(all_opts["random"].items()) - set(all_opts["pretrained"].items()) == {("--model.backbone_init", "random")}
    assert all_opts["random+tok"]["--model.train_tokenizer"] == "true" and "--model.backbone" not in all_opts["eegnet"]
    assert all_opts["shallow"]["--model.baseline"] == "shallow"
    assert all_opts["brainomni"]["--model.backbone"] == str(tmp_path / "bo") and "--model.backbone_init" not in all_opts["brainomni"]
    recs = [{"name": "SCP1", "arm": arm, "seed": s, "test": {"balanced_accuracy": v}}
            for arm, vals in (("pretrained", [0.80, 0.82, 0.84]), ("random", [0.70, 0.71, 0.72]), ("eegnet", [0.85, 0.85, 0.85]))
            for s, v in enumerate(vals)]
    lines = fa.verdicts(recs, "SCP1")
    assert "beats by more than 1 std" in lines[0] and "below EEGNet" in lines[1]
    with pytest.raises(SystemExit):
        fa.parse_variants(["no equals sign"])


def test_recentre_removes_each_splits_own_channel_median_and_keeps_item_differences():
    """``--data.recentre``: within every split of the real demo task, the items of each recording (one channel set)
    end with per-channel median 0 over them, and the differences between two of its items are untouched."""
    plain = FinetuneDataModule(str(DEMO_TASK), batch_size=4)
    plain.setup("fit")
    dm = FinetuneDataModule(str(DEMO_TASK), batch_size=4, recentre=True)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        before, after = plain.subsets[split], dm.subsets[split]
        assert len(after) == len(before) > 0
        same = [i for i, it in enumerate(after) if tuple(it["channels"]) == tuple(after[0]["channels"])]
        if split == "train":
            assert len(same) >= 2  # so the item-difference check below runs on at least one split
        joined = np.concatenate([after[i]["signal"] for i in same], axis=1)
        np.testing.assert_allclose(np.median(joined, axis=1), 0, atol=1e-5)
        shift = before[0]["signal"] - after[0]["signal"]
        assert np.abs(shift).max() > 0 and np.allclose(shift, shift[:, :1], atol=1e-3)  # one constant per channel
        for i in same[1:]:
            moved = before[i]["signal"] - after[i]["signal"]
            np.testing.assert_allclose(moved, np.broadcast_to(shift[:, :1], moved.shape), atol=1e-3)
