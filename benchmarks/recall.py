"""Retrieval metrics: blocked exact kNN (ours) vs a naive full-matrix version.

Ours (components/recall_evaluator/metrics.py) processes `block_size` queries
at a time: one [block, N] distance block, a sampled-threshold selection of
the top k, a sort of the few candidates. The naive baseline is what one
writes first: the full N x N distance matrix, a full stable argsort of every
row, then the metrics from the sorted label matrix. Both run in this process,
on the same random embeddings, and must agree (up to float32 rounding of
near-ties; the table shows the largest difference).

Rows:
  recall_at_k        ours, Recall@1/2/4/8 (top-8 only)
  retrieval_metrics  ours, Recall@1/2/4/8 + MAP@R + R-precision (top-R), no NMI
  argpartition       ablation: ours with np.argpartition + sort for the top k
                     (per-row selection over the whole block row; timing only)
  naive              full N x N matrix + argsort; Recall@K + MAP@R + R-precision

"x time" and "x mem" are naive / row (higher is better for the row), and
max|diff| is the largest difference of any metric from the naive one.

Peak memory is tracemalloc's peak of the allocations made during the call
(NumPy reports its array buffers to tracemalloc; BLAS scratch is not counted).
The naive version is skipped when its two N x N arrays (float32 distances and
int64 argsort, 12 * N^2 bytes) exceed --naive-max-gb; the table then shows
that requirement.

    python benchmarks/recall.py                 # N = 10k and 100k, dim 128
    python benchmarks/recall.py --quick         # N = 2k and 5k, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from components.recall_evaluator import metrics as M  # noqa: E402

KS = (1, 2, 4, 8)


def make_embeddings(n: int, dim: int, images_per_class: int, seed: int = 0):
    """Clustered, L2-normalised float32 embeddings; classes of equal size, shuffled."""
    rng = np.random.default_rng(seed)
    num_classes = max(2, n // images_per_class)
    labels = rng.permutation(np.arange(n) % num_classes)
    centres = rng.standard_normal((num_classes, dim)).astype(np.float32)
    x = centres[labels] + 2.0 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def naive_metrics(x: np.ndarray, labels: np.ndarray, ks=KS) -> dict:
    """Full N x N distances, full stable argsort, metrics from the sorted labels."""
    n = x.shape[0]
    sq = (x * x).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0))
    np.fill_diagonal(d, np.inf)                       # leave-one-out
    order = np.argsort(d, axis=1, kind="stable")[:, : n - 1]
    del d
    rel = labels[order] == labels[:, None]
    del order
    r = np.bincount(labels)[labels] - 1
    valid = r > 0
    rel, r = rel[valid], r[valid]
    out = {f"recall@{k}": float(rel[:, :k].any(axis=1).mean()) for k in ks}
    ranks = np.arange(1, n, dtype=np.float32)
    within = ranks[None, :] <= r[:, None]
    prec = np.cumsum(rel, axis=1, dtype=np.int32) / ranks
    out["map@r"] = float((np.where(rel & within, prec, 0).sum(axis=1) / r).mean())
    out["r_precision"] = float(((rel & within).sum(axis=1) / r).mean())
    return out


def _argpartition_topk(d2: np.ndarray, k: int) -> np.ndarray:
    """Ablation: np.argpartition over the whole row, then sort the k (no tie rule)."""
    if k >= d2.shape[1]:
        return np.argsort(d2, axis=1, kind="stable")[:, :k]
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(d2, part, axis=1)
    return np.take_along_axis(part, np.argsort(vals, axis=1, kind="stable"), axis=1)


@contextlib.contextmanager
def argpartition_selection():
    saved = M.topk_sorted
    M.topk_sorted = _argpartition_topk
    try:
        yield
    finally:
        M.topk_sorted = saved


def measure(fn):
    """(result, seconds, peak traced bytes) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip()
                     for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                     if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - informational only
        model = platform.processor() or "unknown CPU"
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, NumPy {np.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--images-per-class", type=int, default=80,
                   help="about Cars196 test (8,131 images / 98 classes); R = this - 1")
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--naive-max-gb", type=float, default=None,
                   help="skip naive when 12*N^2 bytes exceed this (default: half of RAM)")
    p.add_argument("--no-ablation", action="store_true", help="skip the argpartition row")
    p.add_argument("--quick", action="store_true", help="N = 2000 and 5000: a few seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [2000, 5000]
    max_gb = args.naive_max_gb or psutil.virtual_memory().total / 2**30 / 2

    print(f"# machine: {machine()}")
    print(f"# dim {args.dim}, {args.images_per_class} images/class, block_size {args.block_size}, "
          f"ks {KS}, float32")
    header = f"{'N':>8} {'method':<18} {'seconds':>9} {'peak MiB':>10} {'x time':>8} {'x mem':>8}  recall@1  map@r   max|diff|"
    print(header)
    print("-" * len(header))
    rows = []
    for n in args.sizes:
        x, labels = make_embeddings(n, args.dim, args.images_per_class)
        runs = []
        need_gb = 12 * n * n / 2**30
        if need_gb <= max_gb:
            res, sec, peak = measure(lambda: naive_metrics(x, labels))
            runs.append(("naive", res, sec, peak))
        naive = runs[0] if runs else None
        res, sec, peak = measure(lambda: M.recall_at_k(x, labels, KS, block_size=args.block_size))
        runs.append(("recall_at_k", {f"recall@{k}": v for k, v in res.items()}, sec, peak))
        res, sec, peak = measure(lambda: M.retrieval_metrics(
            x, labels, KS, block_size=args.block_size, compute_nmi=False))
        runs.append(("retrieval_metrics", res, sec, peak))
        if not args.no_ablation:
            with argpartition_selection():
                res, sec, peak = measure(lambda: M.retrieval_metrics(
                    x, labels, KS, block_size=args.block_size, compute_nmi=False))
            runs.append(("argpartition", res, sec, peak))
        diffs = {}
        if naive is not None:
            # Same metrics up to float32 rounding: the naive full-matrix product
            # and the blocked one may round a near-tie differently (~1/N effects).
            for name, res, _, _ in runs[1:]:
                diffs[name] = max(abs(v - naive[1][k]) for k, v in res.items() if k in naive[1])
                assert diffs[name] < 1e-3, (name, res, naive[1])
        for name, res, sec, peak in runs:
            speed = f"{naive[2] / sec:8.1f}" if naive else f"{'-':>8}"
            mem = f"{naive[3] / peak:8.1f}" if naive else f"{'-':>8}"
            map_r = f"{res['map@r']:.4f}" if "map@r" in res else "  -   "
            diff = f"{diffs[name]:.1e}" if name in diffs else "-"
            print(f"{n:>8} {name:<18} {sec:9.2f} {peak / 2**20:10.1f} {speed} {mem}  "
                  f"{res['recall@1']:.4f}    {map_r}  {diff}", flush=True)
            rows.append((n, name, sec, peak))
        if naive is None:
            print(f"{n:>8} {'naive':<18} {'not run':>9}   needs {need_gb:.0f} GiB "
                  f"(12 N^2 bytes) > {max_gb:.0f} GiB limit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
