"""Small REAL fine-tuning artefacts for tests (used by the ``model_registry`` fixture in conftest.py).

* a labelled task over bundled recordings (tests/data/demo_task.csv): which amplifier recorded a 1 s
  segment, ``biosemi`` (test.edf, 6 segments) or ``natus`` (test_subsecond.edf, 6 segments);
* a tiny tokenizer package (random init, codebooks k-means-initialised on real windows of the bundled
  recordings), and a backbone package of preset ``tiny`` (random init, the tokenizer's codebooks) in the
  format ``python -m pretrain export`` writes;
* a probe fine-tuned for a few epochs through the real CLI and exported to a registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"
DEMO_TASK = FIXTURES / "demo_task.csv"


def tiny_tokenizer_package(out: Path, seed: int = 0) -> Path:
    """A `tiny` BrainTokenizer package whose codebooks were k-means-initialised on real windows."""
    from data.dataset import WindowCollator
    from data.preprocess import PreprocessingSpec
    from data.readers import open_raw
    from finetune.preprocessing import fit_preprocessing, windows_from_raw
    from tokenizer.config import TokenizerConfig
    from tokenizer.model import BrainTokenizer
    from tokenizer.package import save_package

    torch.manual_seed(seed)
    prep = fit_preprocessing("recordings")
    items = []
    for name, segments in (("test.edf", None), ("test_subsecond.edf", [(30.0, 46.0)])):
        items += windows_from_raw(open_raw(FIXTURES / name), prep, name, segments=segments).items[:8]
    batch = WindowCollator(max_channels=32, seed=seed)(items)
    model = BrainTokenizer(TokenizerConfig.tiny())
    model.train()
    with torch.no_grad():
        model(batch)  # k-means initialisation of the codebooks on real windows
    return save_package(model.eval(), out, preprocessing=PreprocessingSpec().to_dict())


def test_backbone_package(tokenizer_pkg: Path, out: Path, seed: int = 0) -> Path:
    """A randomly initialised backbone of preset ``tiny`` on the tokenizer's codebooks, packaged like
    ``python -m pretrain export`` does (config.json + model.safetensors + reference to the tokenizer)."""
    from pretrain.lightning import load_tokenizer_codebooks
    from pretrain.model import MaskedTokenModel, build_config
    from pretrain.package import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
    from tokenizer.package import package_reference

    torch.manual_seed(seed)
    codebooks, sizes = load_tokenizer_codebooks(str(tokenizer_pkg))
    cfg = build_config("tiny", **sizes)
    model = MaskedTokenModel(cfg, codebooks)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    meta = {"format_version": FORMAT_VERSION, "model": "MaskedTokenModel", "config": cfg.to_dict(),
            "tokenizer": package_reference(tokenizer_pkg), "training": {"note": "random init (test fixture)"}}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return out


def fit_args(task: Path, backbone: Path | None, run: Path, config: str = "probe", *extra: str) -> list[str]:
    args = ["fit", "-c", str(REPO / "finetune" / "configs" / f"{config}.yaml"), "--data.path", str(task), "--data.batch_size", "4",
            "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger", "false", "--early_stopping_patience", "0"]
    if backbone is not None:
        args += ["--model.backbone", str(backbone)]
    return args + list(extra)


def build_registry(root: Path, name: str = "demo") -> dict:
    """Tokenizer + backbone packages, a probe fitted for 2 epochs on the demo task through the CLI (in-process),
    exported to ``root/registry/NAME/1``. Returns the paths."""
    from finetune.__main__ import main

    tok = tiny_tokenizer_package(root / "tokenizer_pkg")
    bb = test_backbone_package(tok, root / "backbone_pkg")
    run = root / "run_probe"
    assert main(fit_args(DEMO_TASK, bb, run)) == 0
    registry = root / "registry"
    assert main(["export", str(run), "--registry", str(registry), "--name", name]) == 0
    return {"registry": registry, "name": name, "version": "1", "package": registry / name / "1", "run": run,
            "tokenizer": tok, "backbone": bb, "task": DEMO_TASK}
