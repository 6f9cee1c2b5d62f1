"""Fine-tuning models, training CLI, model packages and prediction, on real bundled recordings.

The session fixture ``model_registry`` (conftest.py) fits a probe through ``python -m finetune fit`` on
tests/data/demo_task.csv and exports it; the epochs task below (60 EEG channels of the MNE sample recording)
trains a braindecode EEGNet baseline and a probe on the same splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from finetune_support import fit_args

from data.readers import open_raw
from finetune.__main__ import main
from finetune.errors import ModelPackageError
from finetune.model import FoundationClassifier, HeadConfig, build_classifier
from finetune.package import (
    list_models,
    load_model_package,
    resolve_version,
    save_model_package,
    versions,
)
from finetune.predict import ChannelMismatchError, Predictor, predict_path
from pretrain.model import build_config
from tokenizer.config import TokenizerConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"
SAMPLE = FIXTURES / "sample_audvis_5s_raw.fif"


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _batch(b: int, c: int, t: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(b, c, t, generator=g)
    types = torch.zeros(b, c, dtype=torch.long)
    pos = torch.randn(b, c, 3, generator=g) * 0.08
    pos[:, -1] = float("nan")  # one channel with an unknown position
    return signal, types, pos, torch.zeros(b, c, 3)


# ----------------------------------------------------------------------------------------------------
# model


@pytest.mark.parametrize("input_kind", ["latents", "tokens"])
def test_modes_shapes_and_what_trains(input_kind):
    tc = dataclasses.replace(TokenizerConfig.tiny(), kmeans_init=False)  # codebooks ready (as in a package)
    bc = build_config("tiny", n_latent=tc.n_latent, rvq_levels=tc.rvq_levels, codebook_size=tc.codebook_size,
                      codebook_dim=tc.codebook_dim)  # fmt: skip
    x = _batch(2, 3, t=256)
    trainable = {}
    for mode in ("probe", "full", "lora"):
        torch.manual_seed(0)
        m = FoundationClassifier(tc, bc, HeadConfig(n_classes=3), backbone_input=input_kind)
        m.set_mode(mode)
        codebooks = m.tokenizer.quantizer.rvq.codebooks.clone()
        m.train()
        assert not m.tokenizer.training  # the RVQ never updates its codebooks while fine-tuning
        logits = m(*x)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        logits.logsumexp(-1).mean().backward()
        torch.testing.assert_close(m.tokenizer.quantizer.rvq.codebooks, codebooks)
        names = {n for n, p in m.named_parameters() if p.requires_grad}
        trainable[mode] = sum(p.numel() for p in m.parameters() if p.requires_grad)
        assert not any(n.startswith("tokenizer.") for n in names)
        assert "backbone.codebooks" not in names and not any(n.startswith("backbone.head.") for n in names)
        if mode == "probe":
            assert names and all(n.startswith("head.") for n in names)
        if mode == "full":
            assert any(n.startswith("backbone.blocks.0.") for n in names)
            assert len(m.layer_groups()) == bc.n_layers + 2  # head, each block (top one with the norm), embeddings
        if mode == "lora":
            lora = [n for n in names if "lora_" in n]
            assert lora and all(n.startswith("head.") or "lora_" in n for n in names)  # backbone base weights frozen
            assert all(m.get_parameter(n).grad is not None for n in lora)
    assert trainable["probe"] < trainable["lora"] < trainable["full"]


def test_padding_and_channel_order_do_not_change_predictions():
    tc = TokenizerConfig.tiny()
    bc = build_config("tiny", n_latent=tc.n_latent, rvq_levels=tc.rvq_levels, codebook_size=tc.codebook_size,
                      codebook_dim=tc.codebook_dim)  # fmt: skip
    torch.manual_seed(0)
    m = FoundationClassifier(tc, bc, HeadConfig(n_classes=2), backbone_input="latents").eval()
    sig, types, pos, ori = _batch(1, 4)
    with torch.no_grad():
        alone = m(sig, types, pos, ori)
        perm = torch.tensor([2, 0, 3, 1])
        permuted = m(sig[:, perm], types[:, perm], pos[:, perm], ori[:, perm])
        pad = lambda a: torch.cat([a, torch.zeros(1, 3, *a.shape[2:], dtype=a.dtype)], 1)  # noqa: E731
        mask = torch.tensor([[True] * 4 + [False] * 3])
        padded = m(pad(sig), pad(types), pad(pos), pad(ori), mask)
    torch.testing.assert_close(permuted, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# fit -> export -> predict (the session fixture ran fit + export through the CLI)


def test_fit_writes_run_and_export_writes_package(model_registry):
    run, pkg = model_registry["run"], model_registry["package"]
    for f in ("splits.json", "test_metrics.json", "confusion_test.png", "confusion_val.png", "checkpoints/best.ckpt",
              "checkpoints/last.ckpt", "config.yaml"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "test_metrics.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    test_idx, val_idx = set(splits["test"]["indices"]), set(splits["val"]["indices"])
    assert test_idx and val_idx and not (test_idx & val_idx) and not (test_idx & set(splits["train"]["indices"]))
    for key in ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "pr_auc"):  # binary task
        assert 0.0 <= summary["test"][key] <= 1.0 or key == "cohen_kappa"
    assert np.asarray(summary["test"]["confusion_matrix"]).sum() == splits["test"]["n"]
    assert Path(summary["best_checkpoint"]).name == "best.ckpt"
    assert sorted(p.name for p in pkg.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessing.json", "labels.json", "metrics.json", "model_card.md"])
    metrics = json.loads((pkg / "metrics.json").read_text())
    assert metrics["test"] == summary["test"] and metrics["split_sizes"]["test"] == splits["test"]["n"]
    assert len(metrics["data_hash"]) == 64 and metrics["seed"] == 0
    assert json.loads((pkg / "labels.json").read_text()) == ["biosemi", "natus"]
    card = (pkg / "model_card.md").read_text()
    assert "# demo v1" in card and "python -m finetune predict --model REGISTRY/demo/1" in card and "/v1/models/demo/predict" in card
    listed = list_models(model_registry["registry"])
    assert listed[0]["name"] == "demo" and listed[0]["versions"] == ["1"]
    assert listed[0]["latest"]["test_balanced_accuracy"] == summary["test"]["balanced_accuracy"]
    config = json.loads((pkg / "config.json").read_text())
    train_recs = set(splits["train"]["recordings"])
    assert config["channels"] is None  # 132-channel and 1-channel recordings
    assert ("A1" in config["seen_channels"]) == any(r.endswith("test.edf") for r in train_recs)


def test_package_predicts_exactly_like_the_run_checkpoint(model_registry):
    from finetune.data import load_task

    ckpt = torch.load(model_registry["run"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    facts = ckpt["brainforge_finetune"]
    model = build_classifier(facts["model"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    model.eval()
    package = load_model_package(model_registry["package"])
    assert package.preprocessing.to_dict() == facts["preprocessing"]
    predictor = Predictor(package, batch_size=4)
    items = predictor.prepare_raw(open_raw(FIXTURES / "test.edf"), "edf").items  # 132 channels
    items = [items[0], *load_task(model_registry["task"]).items[-3:], *items[1:]]  # + 1-channel items: padded per batch
    probs = predictor.predict_items(items)
    from data.dataset import WindowCollator

    b = WindowCollator()(items)
    with torch.no_grad():
        ref = torch.softmax(model(b["signal"], b["types"], b["positions"], b["orientations"], b["channel_mask"], b["channel_ids"]), -1).numpy()
    assert probs.shape == (len(items), 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    tokens = Predictor(package).tokenize_items(items[:2])
    assert tokens.shape == (2, 16, 4, 4) and tokens.dtype == np.int64  # 1 s = 4 frames


def test_predict_cli_per_window_and_recording(model_registry, capsys):
    registry = model_registry["registry"]
    missing = FIXTURES / "no_such_recording.edf"
    assert main(["predict", "--model", str(registry / "demo"), "--json", str(FIXTURES / "test.edf"), str(missing)]) == 1
    captured = capsys.readouterr()
    assert f"error: {missing}" in captured.err  # a bad input is named, the good one is still predicted
    (edf,) = [json.loads(line) for line in captured.out.splitlines()]
    assert Path(edf["recording"]).name == "test.edf"
    assert edf["model"] == {"name": "demo", "version": "1"} and edf["summary"]["n_windows"] == 6
    assert [w["t0_s"] for w in edf["windows"]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and edf["windows"][0]["t1_s"] == 1.0
    mean = np.mean([[w["probabilities"][c] for c in ("biosemi", "natus")] for w in edf["windows"]], axis=0)
    np.testing.assert_allclose([edf["summary"]["probabilities"][c] for c in ("biosemi", "natus")], mean, atol=1e-5)
    # the same code path in Python gives the same numbers
    pred = predict_path(Predictor(load_model_package(resolve_version(registry, "demo"))), FIXTURES / "test.edf").to_dict()
    assert pred["summary"]["probabilities"] == edf["summary"]["probabilities"]


# ----------------------------------------------------------------------------------------------------
# registry: versions, escapes, broken packages


def test_versions_increase_and_never_overwrite(model_registry, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(model_registry["registry"], registry)
    before = _sha(registry / "demo" / "1")
    squatter = registry / "demo" / "3"  # e.g. a concurrent export's folder: not a package yet, not ours to touch
    squatter.mkdir()
    (squatter / "keep.txt").write_text("x")
    assert main(["export", str(model_registry["run"]), "--registry", str(registry), "--name", "demo"]) == 0
    assert main(["export", str(model_registry["run"]), "--registry", str(registry), "--name", "demo"]) == 0
    assert versions(registry, "demo") == [1, 2, 4]
    assert _sha(registry / "demo" / "1") == before and (squatter / "keep.txt").read_text() == "x"
    assert resolve_version(registry, "demo").name == "4" and resolve_version(registry, "demo", "2").name == "2"
    assert json.loads((registry / "demo" / "4" / "config.json").read_text())["version"] == "4"
    assert not [p for p in (registry / "demo").iterdir() if p.name.startswith(".")]  # no partial folders left


@pytest.mark.parametrize("name,version", [("..", None), ("../demo", None), ("demo/1", None), ("/etc", None),
                                          ("demo", ".."), ("demo", "../../x"), ("demo", "1/../1"), ("demo", "-1"),
                                          (".hidden", None)])  # fmt: skip
def test_registry_escapes_are_refused(model_registry, name, version):
    with pytest.raises(ModelPackageError, match="not allowed|outside"):
        resolve_version(model_registry["registry"], name, version)


def test_export_with_a_bad_name_writes_nothing(model_registry, tmp_path, capsys):
    registry = tmp_path / "reg"
    assert main(["export", str(model_registry["run"]), "--registry", str(registry), "--name", "../evil"]) == 1
    assert "not allowed" in capsys.readouterr().err
    assert not (tmp_path / "evil").exists() and (not registry.exists() or not any(registry.iterdir()))


def test_broken_packages_name_the_file(model_registry, tmp_path):
    def copy() -> Path:
        dst = tmp_path / f"p{len(list(tmp_path.iterdir()))}" / "m" / "1"
        shutil.copytree(model_registry["package"], dst)
        return dst

    p = copy()
    (p / "model.safetensors").unlink()
    with pytest.raises(ModelPackageError, match=r"missing .*model\.safetensors"):
        load_model_package(p)
    p = copy()
    data = (p / "model.safetensors").read_bytes()
    (p / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelPackageError, match=r"model\.safetensors"):
        load_model_package(p)
    p = copy()
    (p / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelPackageError, match=r"model\.safetensors"):
        load_model_package(p)
    p = copy()
    (p / "config.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match=r"config\.json"):
        load_model_package(p)
    p = copy()
    (p / "labels.json").write_text('["only", "three", "labels"]')
    with pytest.raises(ModelPackageError, match=r"labels\.json"):
        load_model_package(p)
    p = copy()
    (p / "preprocessing.json").unlink()
    with pytest.raises(ModelPackageError, match=r"preprocessing\.json"):
        load_model_package(p)
    # a listing shows the broken model with its error instead of failing
    reg = p.parent.parent
    (p / "metrics.json").write_text("[")
    assert "error" in list_models(reg)[0]


# ----------------------------------------------------------------------------------------------------
# channels the model has never seen; baselines on the same splits


def test_unseen_channels_predict_with_a_warning(model_registry, tmp_path):
    package = load_model_package(model_registry["package"])
    registry = tmp_path / "reg"
    trained = [f"EEG {i:03d}" for i in range(1, 61)]
    save_model_package(registry, "eeg60", package.model, package.labels, package.preprocessing, package.metrics, package.card,
                       channels=trained)  # fmt: skip
    predictor = Predictor(load_model_package(resolve_version(registry, "eeg60")))
    res = predict_path(Predictor(package), SAMPLE)  # MEG + EEG: never seen by the demo model (EEG only)
    assert any("not in the training data" in w and "MEG" in w for w in res.warnings)
    res = predict_path(predictor, FIXTURES / "test.edf")  # BioSemi-style names: none of them seen in training
    assert res.summary["n_windows"] == 6
    assert any("not in the training data" in w and "A1" in w for w in res.warnings)
    res = predictor.summarise(predictor.prepare_raw(open_raw(SAMPLE).pick("eeg"), "eeg only"),
                              predictor.predict_items(predictor.prepare_raw(open_raw(SAMPLE).pick("eeg"), "x").items))
    assert not any("not in the training data" in w for w in res.warnings)


@pytest.fixture(scope="module")
def epochs_task(tmp_path_factory) -> Path:
    """24 real 0.5 s epochs of the 60 EEG channels of the MNE sample recording (labels a/b alternate), split given."""
    import pandas as pd

    out = tmp_path_factory.mktemp("epochs_task")
    raw = mne.io.read_raw_fif(SAMPLE, verbose="error").load_data().pick("eeg")
    sf = raw.info["sfreq"]
    onsets = np.arange(0.1, 4.4, 0.18)[:24]
    codes = 1 + np.arange(len(onsets)) % 2
    events = np.c_[np.round(onsets * sf).astype(int) + raw.first_samp, np.zeros(len(onsets), int), codes]
    md = pd.DataFrame({"split": ["train"] * 12 + ["val"] * 6 + ["test"] * 6})
    ep = mne.Epochs(raw, events, {"a": 1, "b": 2}, tmin=0.0, tmax=0.5 - 1 / sf, baseline=None, preload=True,
                    metadata=md, verbose="error")  # fmt: skip
    ep.save(out / "sample-epo.fif", verbose="error")
    return out / "sample-epo.fif"


def test_baseline_on_the_same_splits_exported_beside_the_model(epochs_task, model_registry, tmp_path):
    base_run, probe_run, registry = tmp_path / "eegnet", tmp_path / "probe", tmp_path / "registry"
    one_epoch = ("--trainer.max_epochs", "1")
    assert main(fit_args(epochs_task, None, base_run, "full", "--model.baseline", "eegnet", *one_epoch)) == 0
    assert main(fit_args(epochs_task, model_registry["backbone"], probe_run, "probe", *one_epoch)) == 0
    assert (base_run / "splits.json").read_text() == (probe_run / "splits.json").read_text()
    base = json.loads((base_run / "test_metrics.json").read_text())
    assert base["facts"]["arch"] == "eegnet" and base["facts"]["split_sizes"] == {"train": 12, "val": 6, "test": 6}
    assert main(["export", str(probe_run), "--registry", str(registry), "--name", "sample", "--baseline-run", str(base_run)]) == 0
    metrics = json.loads((registry / "sample" / "1" / "metrics.json").read_text())
    assert metrics["baseline"]["arch"] == "eegnet" and metrics["baseline"]["test"] == base["test"]
    assert "baseline eegnet (same splits)" in (registry / "sample" / "1" / "model_card.md").read_text()
    # the baseline itself as a package: it needs its 60 training channels, picked by name
    assert main(["export", str(base_run), "--registry", str(registry), "--name", "sample-eegnet"]) == 0
    predictor = Predictor(load_model_package(resolve_version(registry, "sample-eegnet")))
    n_eeg = 60 - len(mne.io.read_raw_fif(SAMPLE, verbose="error").copy().pick("eeg").info["bads"])
    assert predictor.package.kind == "baseline" and len(predictor.package.channels) == n_eeg
    res = predict_path(predictor, epochs_task)
    assert res.summary["n_windows"] == 24
    eeg = tmp_path / "sample_eeg_raw.fif"  # the continuous recording, EEG + EOG: the EOG channel is not model input
    mne.io.read_raw_fif(SAMPLE, verbose="error").pick(["eeg", "eog"]).save(eeg, verbose="error")
    res = predict_path(predictor, eeg)
    assert res.summary["n_windows"] == 10  # consecutive 0.5 s pieces of the 5 s recording
    assert len(predictor.prepare_raw(open_raw(eeg), "x").layout) == n_eeg
    with pytest.raises(ChannelMismatchError, match="EEG 001"):
        predict_path(predictor, FIXTURES / "test.edf")


def test_lora_adapters_are_merged_on_export(model_registry, tmp_path):
    """A LoRA checkpoint (adapters with non-zero weights) exports to a plain package that predicts the same."""
    from finetune.lightning import load_foundation
    from finetune.model import add_lora
    from finetune.package import CHECKPOINT_KEY, export_run

    ckpt = torch.load(model_registry["run"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    facts = dict(ckpt[CHECKPOINT_KEY], mode="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    model, _ = load_foundation(str(model_registry["backbone"]), None, HeadConfig(n_classes=2), "latents")
    add_lora(model.backbone, 4, 8, 0.0)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    facts["model"] = model.config_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, CHECKPOINT_KEY: facts},
               tmp_path / "lora.ckpt")  # fmt: skip
    out = export_run(tmp_path / "lora.ckpt", tmp_path / "registry", "lora")
    package = load_model_package(out)
    assert not any("lora" in k for k in package.model.state_dict())
    predictor = Predictor(package)
    items = predictor.prepare_raw(open_raw(FIXTURES / "test.edf"), "edf").items[:2]
    b = predictor._collate(items)
    with torch.no_grad():
        ref = torch.softmax(model(b["signal"], b["types"], b["positions"], b["orientations"], b["channel_mask"], b["channel_ids"]), -1)
        plain = model.backbone.blocks[0].spatial.qkv.base_layer.weight
    np.testing.assert_allclose(predictor.predict_items(items), ref.numpy(), atol=1e-5)
    assert not torch.allclose(package.model.backbone.blocks[0].spatial.qkv.weight, plain)  # the adapter was merged in


def test_offset_augment_shifts_each_item_by_one_offset_on_its_real_channels_only():
    from data.dataset import offset_augmented

    torch.manual_seed(0)
    signal = torch.randn(400, 3, 64)
    mask = torch.ones(400, 3, dtype=torch.bool)
    mask[:, 2] = False  # padding rows
    out = offset_augmented(signal, mask, 1.5)
    shift = out - signal
    assert torch.equal(shift[:, 2], torch.zeros_like(shift[:, 2]))  # padding untouched
    assert torch.allclose(shift[:, 0], shift[:, 1], atol=1e-5)
    assert torch.allclose(shift[:, 0], shift[:, 0, :1].expand(-1, 64), atol=1e-5)
    assert 1.3 < float(shift[:, 0, 0].std()) < 1.7  # N(0, 1.5^2) over 400 items
    assert torch.equal(offset_augmented(signal, mask, 0.0), signal)
