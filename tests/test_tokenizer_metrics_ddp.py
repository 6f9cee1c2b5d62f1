"""`ReconstructionMetrics` and `CodebookUsage` under real 2-process DDP (gloo, CPU): ranks that see different
modalities and codes compute the same keys and the values one process gets on all the data."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tokenizer.metrics import CodebookUsage, ReconstructionMetrics

SFREQ, T = 256.0, 256


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank 0: EEG channels only, codes 0-1; rank 1: MEG channels only, codes 2-3 (level 0) and 0 (level 1)."""
    g = torch.Generator().manual_seed(rank)
    target = torch.randn(2, 3, T, generator=g)
    pred = target + 0.3 * torch.randn(2, 3, T, generator=g)
    types = torch.full((2, 3), 0 if rank == 0 else 1, dtype=torch.long)  # SensorType.EEG / MAG
    mask = torch.tensor([[True, True, True], [True, True, False]])
    indices = torch.tensor([[2 * rank, 0], [2 * rank + 1, 0]])
    return pred, target, types, mask, indices


def _compute(ranks: list[int]) -> dict[str, float]:
    rec, usage = ReconstructionMetrics(SFREQ), CodebookUsage(n_levels=2, codebook_size=4)
    for rank in ranks:
        pred, target, types, mask, indices = _rank_data(rank)
        rec.update(pred, target, types, mask)
        usage.update(indices)
    return {**rec.compute(), **usage.compute()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = _compute([rank])
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_metrics_reduce_over_two_processes(tmp_path) -> None:
    # fork, as in test_tokenizer_ddp.py: the children skip re-importing torch and the stages
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one_process = _compute([0, 1])
    assert list(ranks[0]) == list(ranks[1]) == list(one_process)  # same keys, same order, on every rank
    assert {"eeg/pcc", "meg/pcc", "eeg/nmse", "meg/nmse"} <= set(one_process)
    for key, value in one_process.items():
        assert abs(ranks[0][key] - value) <= 1e-12 * max(1.0, abs(value)), key
        assert ranks[1][key] == ranks[0][key], key
    assert one_process["usage_l0"] == 1.0  # all 4 codes over both ranks, not the mean of per-rank fractions (0.5)
    assert one_process["usage_l1"] == 0.25
