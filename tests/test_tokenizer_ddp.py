"""Codebooks stay in sync across 2 processes (gloo, CPU) when ``sync_codebook=True`` is passed explicitly."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenizer import BrainTokenizer, TokenizerConfig

CFG = TokenizerConfig.tiny()


def _codebooks_after_steps(sync: bool, rank: int) -> np.ndarray:
    torch.manual_seed(0)  # same initial weights on both ranks
    model = BrainTokenizer(CFG, sync_codebook=sync)
    torch.manual_seed(100 + rank)  # different data (and dropout) per rank
    b, c = 2, 12
    batch = {
        "signal": torch.randn(b, c, CFG.window_samples),
        "types": torch.zeros(b, c, dtype=torch.long),
        "positions": 0.09 * torch.nn.functional.normalize(torch.randn(b, c, 3), dim=-1),
        "orientations": torch.zeros(b, c, 3),
    }
    for _ in range(2):
        model(batch)  # training mode: k-means init, then EMA updates and dead-code expiry
    return model.quantizer.rvq.codebooks.detach().numpy()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for sync in (True, False):
            np.save(f"{out_dir}/rank{rank}_sync{int(sync)}.npy", _codebooks_after_steps(sync, rank))
    finally:
        dist.destroy_process_group()


def test_codebooks_synchronised_across_two_processes(tmp_path) -> None:
    # fork (as DataLoader workers do, one thread each): the children skip re-importing torch and the stages
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    synced = [np.load(tmp_path / f"rank{r}_sync1.npy") for r in range(2)]
    unsynced = [np.load(tmp_path / f"rank{r}_sync0.npy") for r in range(2)]
    np.testing.assert_allclose(synced[0], synced[1], rtol=0, atol=1e-6)
    assert not np.allclose(unsynced[0], unsynced[1])  # the check above is not vacuous
