"""BrainOmni test helpers: released-format checkpoints with seeded random weights (numpy PCG64, so the same
numbers on every platform), written the way the released Hugging Face folders are (``model_cfg.json`` and a
plain state dict under the released parameter names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

#: BrainOmni_tiny's released model_cfg.json (BrainTokenizer fields + backbone fields)
TINY_CFG = {
    "window_length": 512, "n_filters": 32, "ratios": [8, 4, 2], "kernel_size": 5, "last_kernel_size": 5,
    "n_dim": 256, "n_head": 4, "n_neuro": 16, "dropout": 0.0, "codebook_dim": 256, "codebook_size": 512,
    "num_quantizers": 4, "rotation_trick": True, "quantize_optimize_method": "ema",
    "overlap_ratio": 0.25, "lm_dim": 256, "lm_head": 8, "lm_depth": 12, "lm_dropout": 0.1, "mask_ratio": 0.5,
    "num_quantizers_used": 4,
}  # fmt: skip
TOKENIZER_FIELDS = ("window_length", "n_filters", "ratios", "kernel_size", "last_kernel_size", "n_dim", "n_head",
                    "n_neuro", "dropout", "codebook_dim", "codebook_size", "num_quantizers", "rotation_trick",
                    "quantize_optimize_method")
#: a small configuration for fast fine-tune / serve tests
SMALL_CFG = {**TINY_CFG, "n_filters": 4, "n_dim": 32, "n_head": 2, "n_neuro": 4, "codebook_dim": 32, "codebook_size": 16,
             "num_quantizers": 2, "lm_dim": 32, "lm_head": 4, "lm_depth": 2, "num_quantizers_used": 2}


def _value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(shape)
    if name.endswith("inited"):
        return np.ones(shape)
    if name.endswith("cluster_size"):
        return rng.uniform(0.5, 2.0, shape)
    if name.endswith(("embed", "embed_avg")):
        return n / np.sqrt(shape[-1])
    if name.endswith("weight_g"):
        return 1.0 + 0.1 * np.abs(n)
    if name.endswith("norm.weight") or "_norm." in name:
        return 1.0 + 0.1 * n
    if name.endswith("neuros"):
        return n
    if name.endswith("mask_token"):
        return 0.02 * n
    if name.endswith("sensor_embedding_layer.weight"):
        return 0.5 * n
    if len(shape) >= 2:
        return n / np.sqrt(np.prod(shape[1:]))
    return 0.02 * n


def random_released_state(cfg: dict, seed: int = 0, with_backbone: bool = True) -> dict[str, torch.Tensor]:
    """Released-name state dict of BrainOmni (``with_backbone``) or BrainTokenizer, seeded random weights."""
    from pretrain.brainomni.convert import released_names
    from pretrain.brainomni.model import BrainOmniBackbone, BrainOmniBackboneConfig
    from tokenizer.brainomni.model import BrainOmniTokenizer, BrainOmniTokenizerConfig

    tok = BrainOmniTokenizer(BrainOmniTokenizerConfig.from_dict(cfg))
    bb = BrainOmniBackbone(BrainOmniBackboneConfig.from_dict(cfg)) if with_backbone else None
    ours = {"tok." + k: v for k, v in tok.state_dict().items()}
    if bb is not None:
        ours |= {"bb." + k: v for k, v in bb.state_dict().items()}
    table = released_names(tok, bb)
    out = {}
    for i, theirs in enumerate(sorted(table)):
        shape = tuple(ours[table[theirs]].shape)
        rng = np.random.default_rng([seed, i])
        out[theirs] = torch.from_numpy(_value(theirs, shape, rng).astype(np.float32))
    return out


def write_released(folder: Path, cfg: dict, seed: int = 0, kind: str = "BrainOmni") -> Path:
    """A folder like the released ones: model_cfg.json + BrainOmni.pt (or BrainTokenizer.pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "BrainOmni":
        (folder / "model_cfg.json").write_text(json.dumps(cfg, indent=2))
        torch.save(random_released_state(cfg, seed, True), folder / "BrainOmni.pt")
    else:
        (folder / "model_cfg.json").write_text(json.dumps({k: cfg[k] for k in TOKENIZER_FIELDS}, indent=2))
        state = random_released_state(cfg, seed, True)
        torch.save({k.removeprefix("tokenizer."): v for k, v in state.items() if k.startswith("tokenizer.")},
                   folder / "BrainTokenizer.pt")
    return folder
