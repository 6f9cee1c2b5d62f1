"""Diagnostic for ``bench/finetune_tasks.py``: do a foundation model's FROZEN features vary with the input and carry
the label? For one labelled set and one backbone package, the mean-pooled backbone input (tokenizer latents in
codebook space, projected) and backbone output of every item are computed; printed per feature: the relative
spread across items (mean over dimensions of the std across items / mean |value|), the mean Pearson correlation
between items, and the test balanced accuracy / AUROC of a logistic regression (standardised, C=0.1) fitted on the
official training part (train + val) and scored on the official test part.

    OMP_NUM_THREADS=1 .venv/bin/python bench/finetune_features.py ../shared/data/tasks/eyes_open_shut-epo.fif runs/bench/pretrain/backbone_pkg
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(task: str, package: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from data.dataset import WindowCollator
    from finetune.lightning import FinetuneDataModule, load_foundation
    from finetune.model import HeadConfig

    dm = FinetuneDataModule(path=task)
    dm.setup()
    model, _ = load_foundation(package, None, HeadConfig(n_classes=len(dm.classes)), "latents")
    model.eval()
    feats = {}
    for split, items in (("train", dm.subsets["train"] + dm.subsets["val"]), ("test", dm.subsets["test"])):
        emb, out = [], []
        with torch.no_grad():
            for i in range(0, len(items), 32):
                b = WindowCollator(None, seed=0)(items[i:i + 32])
                e = model.embed(b["signal"], b["types"], b["positions"], b["orientations"], b["channel_mask"])
                h = model.backbone.encode_embedded(e)
                emb.append(e.mean((1, 2)).numpy())
                out.append(h.mean((1, 2)).numpy())
        feats[split] = (np.concatenate(emb), np.concatenate(out), np.array([it["label"] for it in items]))
    for k, name in ((0, "backbone input"), (1, "backbone output")):
        (xtr, ytr), (xte, yte) = (feats["train"][k], feats["train"][2]), (feats["test"][k], feats["test"][2])
        spread = float(np.std(xtr, 0).mean() / (np.abs(xtr).mean() + 1e-12))
        corr = float(np.corrcoef(xtr)[np.triu_indices(len(xtr), 1)].mean())
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(xtr, ytr)
        p = clf.predict_proba(xte)
        auroc = roc_auc_score(yte, p[:, 1]) if p.shape[1] == 2 else float("nan")
        print(f"{package} on {Path(task).name}, {name} (mean-pooled): relative spread across items {spread:.4f}, "
              f"mean correlation between items {corr:.4f}, logistic regression test balanced accuracy "
              f"{balanced_accuracy_score(yte, p.argmax(1)):.3f}, AUROC {auroc:.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
