"""`runkit`: the run-directory CLI's default callbacks and checkpoint plugin per stage, checkpoint helpers and
the one config policy (issue 16)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from runkit.checkpoints import AtomicCheckpointIO, RunCheckpoint, find_checkpoint, submodule_state
from runkit.cli import RunDirCLI
from runkit.config import DictConfig


def _trainer(cli_cls, root, given_callbacks=None, **options) -> Trainer:
    """What ``cli_cls`` builds for ``--trainer.default_root_dir root`` (no parsing, no model)."""
    cli = cli_cls.__new__(cli_cls)
    cli.trainer_defaults, cli.save_config_callback, cli.trainer_class, cli.subcommand = {}, None, Trainer, None
    cli.config = options
    config = {"default_root_dir": str(root), "callbacks": given_callbacks, "logger": None, "plugins": None,
              "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
    return cli._instantiate_trainer(config, [])


def _of(trainer: Trainer, kind: type) -> list:
    return [c for c in trainer.callbacks if isinstance(c, kind)]


def test_each_stage_gets_its_default_callbacks_and_checkpoint_io(tmp_path) -> None:
    from finetune.cli import FinetuneCLI
    from pretrain.cli import PretrainCLI

    tok = _trainer(RunDirCLI, tmp_path / "tok")
    [ckpt] = _of(tok, ModelCheckpoint)
    assert ckpt.dirpath == str(tmp_path / "tok" / "checkpoints") and ckpt.save_last
    assert not isinstance(tok.strategy.checkpoint_io, AtomicCheckpointIO)
    assert [type(lg).__name__ for lg in tok.loggers] == ["CSVLogger", "TensorBoardLogger"]

    pre = _trainer(PretrainCLI, tmp_path / "pre", checkpoint_every_n_steps=7)
    [ckpt] = _of(pre, ModelCheckpoint)
    assert isinstance(ckpt, RunCheckpoint) and ckpt._every_n_train_steps == 7 and ckpt.save_last
    assert isinstance(pre.strategy.checkpoint_io, AtomicCheckpointIO)

    fin = _trainer(FinetuneCLI, tmp_path / "fin", early_stopping_patience=3)
    [ckpt], [stop] = _of(fin, ModelCheckpoint), _of(fin, EarlyStopping)
    assert ckpt.filename == "best" and ckpt.monitor == "val/selection" and ckpt.save_last
    assert stop.patience == 3 and stop.monitor == "val/selection"
    assert isinstance(fin.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not _of(_trainer(FinetuneCLI, tmp_path / "fin0", early_stopping_patience=0), EarlyStopping)

    given = ModelCheckpoint(dirpath=str(tmp_path / "mine"))
    for cli_cls in (RunDirCLI, PretrainCLI, FinetuneCLI):  # a given ModelCheckpoint replaces the default
        assert _of(_trainer(cli_cls, tmp_path / cli_cls.__name__, [given], checkpoint_every_n_steps=5,
                            early_stopping_patience=2), ModelCheckpoint) == [given]


def test_checkpoint_helpers(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoints/last.ckpt"):
        find_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    state = {"state_dict": {"model.a.weight": torch.ones(1), "model.b": torch.zeros(1), "metric.x": torch.ones(1)}}
    assert list(submodule_state(state)) == ["a.weight", "b"]

    path = tmp_path / "atomic.ckpt"
    AtomicCheckpointIO().save_checkpoint({"x": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.ckpt", "checkpoints"]  # no partial left


@dataclass(frozen=True)
class _Sizes(DictConfig):
    width: int = 2
    shape: tuple = (1, 2)

    @classmethod
    def _from_json(cls, d):
        return {k: tuple(v) if k == "shape" else v for k, v in d.items()}


def test_config_policy_unknown_keys_are_an_error() -> None:
    from data.preprocess import PreprocessingSpec
    from finetune.model import HeadConfig
    from pretrain.model import BackboneConfig
    from tokenizer.config import TokenizerConfig

    assert _Sizes.from_dict(json.loads(json.dumps(_Sizes(3).to_dict()))) == _Sizes(3)
    for cls in (_Sizes, PreprocessingSpec, TokenizerConfig, BackboneConfig, HeadConfig):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: unknown field\(s\) \['not_a_field'\]"):
            cls.from_dict({"not_a_field": 1})
        assert cls.from_dict(cls().to_dict()) == cls()


def test_preprocessing_written_today_still_reads() -> None:
    """The keys of a package's preprocessing.json (finetune) and of a shard manifest's spec (data), as written now."""
    from finetune.preprocessing import TaskPreprocessing

    spec = {"version": 1, "sfreq": 256.0, "l_freq": 0.1, "h_freq_max": 100.0, "h_freq_fraction": 0.45, "line_freq": None,
            "notch": True, "min_sfreq": 64.0, "window_s": 1.0, "stride_s": 1.0, "bad_z_threshold": 5.0,
            "flat_window_fraction": 0.5, "clip": 60000.0, "signal_positions": True, "extra": {}}
    prep = {"spec": spec, "input_kind": "recordings", "window_samples": 256, "scales": None, "offsets": None,
            "length_rule": "tail", "low_pass": True, "segment_rule": "centre", "version": 1, "extra": {}}
    assert TaskPreprocessing.from_dict(prep).to_dict() == prep
    # written before signal_positions existed: reads as False, so such a model keeps the inputs it was trained on
    before = {**prep, "spec": {k: v for k, v in spec.items() if k != "signal_positions"}}
    assert TaskPreprocessing.from_dict(before).to_dict() == {**prep, "spec": {**spec, "signal_positions": False}}
    with pytest.raises(ValueError, match=r"TaskPreprocessing: unknown field\(s\) \['windw_samples'\]"):
        TaskPreprocessing.from_dict({**prep, "windw_samples": 512})
