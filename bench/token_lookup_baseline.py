"""Learned lookup baselines for masked-token prediction: what a table of code co-occurrences, fitted on the training
tokens, predicts on held-out tokens. A stronger yardstick than the copy baselines when the tokenizer maps the latents
of a frame differently (`latent_maps`): coinciding latents then take different codes, so copying fails, but a table
can still learn which code of latent n goes with which code of latent m.

    .venv/bin/python bench/token_lookup_baseline.py --train runs/bench/pretrain_all_v7_maps/tokens_train \\
        --heldout runs/bench/pretrain_all_v7_maps/tokens_heldout

Per RVQ level it prints the held-out accuracy of:

- **spatial lookup**: for a token at (latent n, frame f), each other latent m of the frame votes for the code of n
  seen most often with m's code in training; the commonest vote wins (every other latent visible: optimistic, a
  masked-token model sees only the unmasked ones);
- **frame lookup**: the code of latent n seen most often after n's code in the previous frame (same window);
- **spatial copy** and **unigram** (the commonest code of latent n in training), for reference.

An unseen code casts no vote; with no vote the unigram code of latent n is the guess.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def read_tokens(path: Path) -> np.ndarray:
    """Token shards -> every window's indices [W, N_latent, F, L] int64 (in shard order)."""
    from litdata import StreamingDataset

    from data.shards import check_shard_index

    check_shard_index(str(path.resolve()))
    ds = StreamingDataset(str(path.resolve()))
    return np.stack([np.asarray(ds[i]["indices"], dtype=np.int64) for i in range(len(ds))])


def pair_table(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """For codes a[i] -> b[i] (1-D int arrays), the commonest b for each a [k] (-1 where a never occurs)."""
    table = np.full(k, -1, dtype=np.int64)
    keys, counts = np.unique(a * k + b, return_counts=True)
    order = np.lexsort((-counts, keys // k))  # by a, then most frequent first
    first = np.unique(keys[order] // k, return_index=True)[1]
    best = keys[order][first]
    table[best // k] = best % k
    return table


def majority(votes: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """votes [R, V] (-1 = none) -> the commonest vote per row (ties: the smallest code), else fallback [R]."""
    out = fallback.copy()
    for r in range(votes.shape[0]):
        v = votes[r][votes[r] >= 0]
        if v.size:
            vals, cnt = np.unique(v, return_counts=True)
            out[r] = vals[cnt.argmax()]
    return out


def level_accuracies(train: np.ndarray, held: np.ndarray, k: int) -> list[dict[str, float]]:
    """train, held [W, N, F, L] -> per level {"spatial lookup", "frame lookup", "spatial copy", "unigram"}."""
    _, n, f, levels = train.shape
    rows = []
    for lv in range(levels):
        tr = train[..., lv].transpose(0, 2, 1).reshape(-1, n)  # [W*F, N]: one row per frame
        he = held[..., lv].transpose(0, 2, 1).reshape(-1, n)
        unigram = np.array([np.bincount(tr[:, j], minlength=k).argmax() for j in range(n)])
        acc = {"spatial lookup": [], "frame lookup": [], "spatial copy": [], "unigram": []}
        for j in range(n):
            others = [m for m in range(n) if m != j]
            votes = np.stack([pair_table(tr[:, m], tr[:, j], k)[he[:, m]] for m in others], axis=1)
            fallback = np.full(he.shape[0], unigram[j])
            acc["spatial lookup"].append(majority(votes, fallback) == he[:, j])
            acc["spatial copy"].append(majority(he[:, others], fallback) == he[:, j])
            acc["unigram"].append(fallback == he[:, j])
            prev_tr, next_tr = train[:, j, :-1, lv].ravel(), train[:, j, 1:, lv].ravel()
            table = pair_table(prev_tr, next_tr, k)
            prev_he, next_he = held[:, j, :-1, lv].ravel(), held[:, j, 1:, lv].ravel()
            guess = table[prev_he]
            acc["frame lookup"].append(np.where(guess >= 0, guess, unigram[j]) == next_he)
        rows.append({name: float(np.concatenate(v).mean()) for name, v in acc.items()})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, required=True, help="training token shards (python -m tokenizer encode)")
    p.add_argument("--heldout", type=Path, required=True, help="held-out token shards of the same tokenizer")
    a = p.parse_args(argv)
    from tokenizer.encode import read_token_manifest

    manifest = read_token_manifest(str(a.train.resolve()))
    k = int(manifest["codebook_size"])
    train, held = read_tokens(a.train), read_tokens(a.heldout)
    print(f"training windows {len(train)}, held-out windows {len(held)}, token grid {train.shape[1:]}, {k} codes")
    rows = level_accuracies(train, held, k)
    names = list(rows[0])
    print("| level | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for lv, r in enumerate(rows):
        print(f"| {lv} | " + " | ".join(f"{r[nm]:.2%}" for nm in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
