"""``model_card.md`` of a model package: what it was trained on, how to call it, its measured quality."""

from __future__ import annotations

from typing import Any

from finetune.preprocessing import TaskPreprocessing

METRIC_NAMES = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "pr_auc", "accuracy", "loss")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else str(v))


def _metrics_table(rows: list[tuple[str, dict[str, Any] | None]]) -> str:
    names = [n for n in METRIC_NAMES if any((m or {}).get(n) is not None for _, m in rows)]
    if not names:
        return "No test metrics were recorded for this run.\n"
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, m in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt((m or {}).get(n)) for n in names) + " |")
    return "\n".join(lines) + "\n"


def model_card(facts: dict[str, Any], metrics: dict[str, Any], prep: TaskPreprocessing) -> str:
    """Markdown; ``{name}`` and ``{version}`` are filled in by `save_model_package`."""
    model, task = facts["model"], facts.get("task", {})
    labels = facts["labels"]
    if model["kind"] == "foundation":
        what = (f"brainforge foundation model: BrainTokenizer encoder ({model['input']}) -> masked-token backbone "
                f"(d{model['backbone']['d_model']} x {model['backbone']['n_layers']} layers) -> "
                f"{model['head']['pooling']}-pooling head; fine-tuning mode `{facts.get('mode')}`.")
    elif model["kind"] == "brainomni":
        bb = model["backbone"]
        what = (f"BrainOmni (imported checkpoint, arXiv 2505.18185): frozen BrainTokenizer -> backbone "
                f"(d{bb['lm_dim']} x {bb['lm_depth']} layers) -> {model['head']['pooling']}-pooling head; "
                f"fine-tuning mode `{facts.get('mode')}`. Origin and licence: `config.json` `source`.")
    else:
        what = f"braindecode `{model['arch']}` baseline trained from scratch ({model['n_chans']} channels x {model['n_times']} samples)."
    sizes = task.get("split_sizes") or {}
    channels = facts.get("channels")
    rows = [(f"this model ({metrics.get('arch')})", metrics.get("test"))]
    base = metrics.get("baseline")
    if base:
        rows.append((f"baseline {base.get('arch')} (same splits)", base.get("test")))
    chan_text = (f"{len(channels)} channels: {', '.join(channels[:24])}{', ...' if len(channels) > 24 else ''}"
                 if channels else f"mixed channel sets ({len(facts.get('seen_channels') or [])} distinct channel names in training)")
    foundation = model["kind"] in ("foundation", "brainomni")
    return f"""# {{name}} v{{version}}

{what}

## Trained on
- task: `{task.get('task')}` ({prep.input_kind}); classes: {', '.join(f'`{c}`' for c in labels)}
- class counts (all splits): {task.get('class_counts')}
- splits ({task.get('split_rule', 'given or seeded')}; seed {task.get('seed')}): train {sizes.get('train')}, val {sizes.get('val')}, test {sizes.get('test')} windows
- data hash (sha256 of the items and labels): `{task.get('data_hash')}`
- {chan_text}
- preprocessing: {prep.window_samples} samples at {prep.spec.sfreq:g} Hz per window ({prep.window_s:g} s); see `preprocessing.json`
- checkpoint chosen on the validation split only; the test split was used once, for the numbers below

## Measured quality (test split)
{_metrics_table(rows)}
## How to call it
Command line (any MNE-readable recording, or an `-epo.fif` file):

```
python -m finetune predict --model REGISTRY/{{name}}/{{version}} recording.edf
```

HTTP (`python -m serve --registry REGISTRY`):

```
curl -H "Authorization: Bearer $KEY" -F file=@recording.edf http://127.0.0.1:8000/v1/models/{{name}}/predict
curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/v2/models/{{name}}/versions/{{version}}
```

Python:

```python
from finetune import Predictor, load_model_package, predict_path
predictor = Predictor(load_model_package("REGISTRY/{{name}}/{{version}}"))
print(predict_path(predictor, "recording.edf").to_dict()["summary"])
```

## Limits
- Output: one probability per class per {prep.window_s:g} s window, and their mean per recording.
- {"Channel-agnostic: recordings with other channels are accepted (with a warning), but quality was measured only on the training channels." if foundation else "Needs the training channels by name (others are ignored; a missing one is an error)."}
- Small validation/test splits give coarse estimates; read the split sizes above before trusting a number.
"""
