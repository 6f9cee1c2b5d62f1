"""Exception types of the fine-tuning stage. Every message names the file, CSV row or field at fault."""

from __future__ import annotations


class FinetuneDataError(Exception):
    """Base class: labelled task data that cannot be used, with the reason."""


class TaskFormatError(FinetuneDataError):
    """Malformed input: a bad CSV row, a missing column, a missing file, an unknown trial type, NaN data ..."""


class LabelError(FinetuneDataError):
    """Labels that cannot train a classifier: one class only, an unknown label, no labelled item ..."""


class ModelPackageError(Exception):
    """A fine-tuned model package that cannot be written or loaded (missing file, version clash, ...)."""
