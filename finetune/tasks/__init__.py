"""Labelled task sources, one module each, and `TaskData`; `finetune.data.load_task` picks the source."""
