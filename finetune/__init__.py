"""brainforge fine-tuning: labelled task data, classifiers on the pretrained backbone, braindecode baselines,
metrics, model packages in a registry, and prediction (the server's code path).

Light imports here; the torch-heavy parts (model, package, predict, lightning) load on first use.
"""

from .errors import FinetuneDataError, LabelError, ModelPackageError, TaskFormatError

_LAZY = {
    # task data (finetune.data, finetune.preprocessing, finetune.splits)
    "TaskData": "data", "load_task": "data", "task_from_braindecode": "data",
    "TaskPreprocessing": "preprocessing", "ModelInputs": "preprocessing", "windows_from_raw": "preprocessing",
    "windows_from_epochs": "preprocessing", "fit_preprocessing": "preprocessing",
    "Splits": "splits", "make_splits": "splits", "write_splits": "splits",
    # models and training
    "FoundationClassifier": "model", "BaselineClassifier": "baselines", "BrainOmniClassifier": "brainomni", "HeadConfig": "model",
    "build_classifier": "model", "FinetuneModule": "lightning", "FinetuneDataModule": "lightning",
    "classification_metrics": "metrics",
    # packages and prediction
    "ModelPackage": "package", "load_model_package": "package", "resolve_version": "package",
    "list_models": "package", "save_model_package": "package", "export_run": "package",
    "Predictor": "predict", "RecordingPrediction": "predict", "predict_path": "predict",
    "ChannelMismatchError": "predict",
}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")


__all__ = ["FinetuneDataError", "LabelError", "ModelPackageError", "TaskFormatError", *sorted(_LAZY)]
