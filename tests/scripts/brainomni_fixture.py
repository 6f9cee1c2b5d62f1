"""Build tests/data/brainomni/expected.npz from BrainOmni's reference code (run once, by hand).

    git clone https://github.com/OpenTSLab/BrainOmni /tmp/BrainOmni      # MIT licence; never committed here
    PYTHONPATH=$PWD .venv/bin/python tests/scripts/brainomni_fixture.py /tmp/BrainOmni

Their code is imported from the path given (it needs einops and einx; deepspeed, imported only for
distributed helpers, is replaced by a stub that says "not distributed"). The weights are the seeded random
ones of `tests/brainomni_support.random_released_state` at BrainOmni_tiny's released configuration, loaded into
their `BrainOmni` (tokenizer included). Their attention passes ``dropout_p`` to SDPA even in eval mode, so the
reference is built with ``lm_dropout=0`` (inference semantics); nothing else differs from the released config.
The input is their ``assets/example_data.pt`` (a real 64-channel EEG example of 4 s at 256 Hz).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from brainomni_support import TINY_CFG, random_released_state  # noqa: E402


def main(repo: str) -> None:
    ds, comm = types.ModuleType("deepspeed"), types.ModuleType("deepspeed.comm")
    comm.is_initialized = lambda: False
    comm.ReduceOp = types.SimpleNamespace(SUM=None)
    ds.comm = comm
    sys.modules.setdefault("deepspeed", ds)
    sys.modules.setdefault("deepspeed.comm", comm)
    sys.path.insert(0, repo)
    from brainomni.model import BrainOmni  # their code

    torch.manual_seed(0)
    model = BrainOmni(**{**TINY_CFG, "lm_dropout": 0.0})
    missing, unexpected = model.load_state_dict(random_released_state(TINY_CFG, seed=0), strict=False)
    assert not unexpected, unexpected
    assert all("rope_embedding_layer" in k for k in missing), missing
    model.eval()
    ex = torch.load(Path(repo) / "assets" / "example_data.pt", weights_only=True)
    x, pos, st = ex["x"][None].float(), ex["pos"][None].float(), ex["sensor_type"][None].long()
    with torch.no_grad():
        tok_feats, tok_idx = model.tokenizer.tokenize(x, pos, st, overlap_ratio=0.0)
        recon = model.tokenizer.visualize(x, pos, st)["x_rec"]
        omni = model.encode(x, pos, st)
    out = HERE / "data" / "brainomni"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "example_input.npz", x=x[0].numpy(), pos=pos[0].numpy(), sensor_type=st[0].numpy())
    np.savez_compressed(out / "expected.npz", tokenizer_features=tok_feats.numpy(), tokenizer_indices=tok_idx.numpy(),
                        reconstruction=recon.numpy(), backbone_features=omni.numpy())
    print({k: tuple(v.shape) for k, v in dict(tok_feats=tok_feats, tok_idx=tok_idx, recon=recon, omni=omni).items()})


if __name__ == "__main__":
    main(sys.argv[1])
