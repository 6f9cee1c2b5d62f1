"""Classification metrics (torchmetrics) for validation and test, and the confusion-matrix plot.

Balanced accuracy is the macro-averaged recall. For binary tasks AUROC and PR-AUC (average precision) use the
probability of class 1 (``classes[1]``); with more classes AUROC is the macro average of the one-vs-rest AUROCs. The metric objects sync across processes under DDP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)


class ClassificationMetrics(nn.Module):
    """update(probs [B, K] float, target [B] int); compute() -> {name: float} + ``confusion_matrix`` [K, K] list."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        k = n_classes
        self.labels = MetricCollection({
            "balanced_accuracy": MulticlassRecall(k, average="macro"),
            "accuracy": MulticlassAccuracy(k, average="micro"),
            "cohen_kappa": MulticlassCohenKappa(k),
            "f1_weighted": MulticlassF1Score(k, average="weighted"),
        })  # fmt: skip
        self.confusion = MulticlassConfusionMatrix(k)
        if k == 2:
            self.binary = MetricCollection({"auroc": BinaryAUROC(), "pr_auc": BinaryAveragePrecision()})
        else:  # one-vs-rest, macro average
            self.binary = MetricCollection({"auroc": MulticlassAUROC(k, average="macro")})

    def update(self, probs: Tensor, target: Tensor) -> None:
        probs, target = probs.detach().float(), target.detach().long()
        self.labels.update(probs, target)
        self.confusion.update(probs, target)
        if self.binary is not None:
            self.binary.update(probs[:, 1] if self.n_classes == 2 else probs, target)

    def compute(self) -> dict:
        out = {k: float(v) for k, v in self.labels.compute().items()}
        if self.binary is not None:
            out.update({k: float(v) for k, v in self.binary.compute().items()})
        out["confusion_matrix"] = self.confusion.compute().long().tolist()
        return out

    def reset(self) -> None:
        self.labels.reset()
        self.confusion.reset()
        if self.binary is not None:
            self.binary.reset()


def classification_metrics(probs: np.ndarray, target: np.ndarray, n_classes: int | None = None) -> dict:
    """The same metrics for arrays: probs [N, K], target [N] int -> dict."""
    probs_t = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    m = ClassificationMetrics(n_classes or probs_t.shape[1])
    m.update(probs_t, torch.as_tensor(np.asarray(target), dtype=torch.long))
    return m.compute()


def save_confusion_png(matrix: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix (rows = true class, columns = predicted) as a PNG with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * k, 1.0 + 0.8 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
