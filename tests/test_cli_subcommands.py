"""The training stages list only the LightningCLI subcommands their modules have steps for (issue 13, item 18)."""

from __future__ import annotations

import pytest

STEP = {"fit": "training_step", "validate": "validation_step", "test": "test_step", "predict": "predict_step"}


def _overrides(module_cls, step: str) -> bool:
    import lightning as L

    return getattr(module_cls, step) is not getattr(L.LightningModule, step)


@pytest.mark.parametrize("stage", ["tokenizer", "pretrain", "finetune"])
def test_listed_subcommands_have_steps_and_the_others_are_refused(stage, capsys):
    import importlib

    from runkit.cli import RunDirCLI

    cli_cls = {"tokenizer": RunDirCLI, "pretrain": importlib.import_module("pretrain.cli").PretrainCLI,
               "finetune": importlib.import_module("finetune.cli").FinetuneCLI}[stage]
    module_cls = {"tokenizer": "tokenizer.lightning:TokenizerModule", "pretrain": "pretrain.lightning:PretrainModule",
                  "finetune": "finetune.lightning:FinetuneModule"}[stage]
    mod, name = module_cls.split(":")
    module_cls = getattr(importlib.import_module(mod), name)
    listed = set(cli_cls.subcommands(cli_cls.__new__(cli_cls)))
    assert "fit" in listed and "validate" in listed
    for sub, step in STEP.items():
        assert (sub in listed) == _overrides(module_cls, step), (stage, sub)
    main = importlib.import_module(f"{stage}.__main__").main
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "{" + ",".join(s for s in STEP if s in listed) + "}" in out
    if "test" not in listed:
        with pytest.raises(SystemExit) as info:
            main(["test"])
        assert info.value.code == 2 and "invalid choice: 'test'" in capsys.readouterr().err
