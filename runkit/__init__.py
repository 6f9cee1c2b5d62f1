"""Run plumbing shared by the training stages (tokenizer, pretrain, finetune): the ``python -m <stage>`` entry,
the run-directory LightningCLI, checkpoint files, the learning-rate schedule, dataclass configs and console noise.

It imports no stage package, so every stage may import it. Modules:

- `runkit.entry`: `stage_main` (tools vs LightningCLI dispatch, one-line user errors, quiet third-party output);
- `runkit.console`: `quiet_third_party`, `verbose_requested`;
- `runkit.cli`: `RunDirCLI` (run directory, CSV + TensorBoard logs, default callbacks and checkpoint plugin);
- `runkit.checkpoints`: `AtomicCheckpointIO`, `RunCheckpoint`, `find_checkpoint`, `submodule_state`;
- `runkit.schedule`: `lr_factor` (warm-up then cosine or warmup-stable-decay);
- `runkit.config`: `DictConfig`, to_dict / from_dict for dataclass configs (unknown keys are an error).
"""
