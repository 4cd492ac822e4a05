"""Speed of the CKA implementations, measured side by side in one run.

Run: python benchmarks/bench_metrics.py [--quick]

Prints
1. linear CKA in feature space (projkd) vs the n x n Gram-matrix form at two
   sizes the Gram form can hold, showing n^2 d against n d^2 scaling;
2. projkd's linear CKA at n = 50,000, d = 2,048 (the Gram form would need a
   50,000 x 50,000 float64 matrix: 20 GB);
3. projkd's linear CKA vs a plain float64 numpy evaluation of the same formula
   at n = 20,000, d = 512;
4. MinibatchCKA throughput in samples/s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from projkd.metrics import MinibatchCKA, hsic, linear_cka


def best_time(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gram_linear_cka(X, Y):
    """Linear CKA through n x n Gram matrices (float64)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    Y = torch.as_tensor(Y, dtype=torch.float64)
    K, L = X @ X.T, Y @ Y.T
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


def plain_numpy_linear_cka(X, Y):
    """The same formula, written the obvious way in float64 numpy."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(X.T @ Y) ** 2 / (
        np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    )


def features(rng, n, d):
    X = rng.standard_normal((n, d), dtype=np.float32)
    Y = (X + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    return X, Y


def main(quick: bool = False) -> None:
    rng = np.random.default_rng(0)
    torch.set_num_threads(torch.get_num_threads())
    print(f"threads: torch {torch.get_num_threads()}")

    d = 256 if quick else 2048
    sizes = (1000, 2000) if quick else (2500, 5000)
    print(f"\n1. feature-space vs Gram-form linear CKA, d = {d}")
    print("| n | feature space (s) | Gram form (s) | Gram / feature |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        X, Y = features(rng, n, d)
        assert abs(linear_cka(X, Y) - gram_linear_cka(X, Y)) < 1e-8
        t_feature = best_time(lambda X=X, Y=Y: linear_cka(X, Y))
        t_gram = best_time(lambda X=X, Y=Y: gram_linear_cka(X, Y))
        print(f"| {n} | {t_feature:.3f} | {t_gram:.3f} | {t_gram / t_feature:.2f} |")

    n_big = 5000 if quick else 50_000
    X, Y = features(rng, n_big, d)
    t_big = best_time(lambda: linear_cka(X, Y), repeat=1)
    print(f"\n2. linear CKA at n = {n_big}, d = {d}: {t_big:.2f} s")

    n_mid, d_mid = (4000, 256) if quick else (20_000, 512)
    X, Y = features(rng, n_mid, d_mid)
    assert abs(linear_cka(X, Y) - plain_numpy_linear_cka(X, Y)) < 1e-9
    t_ours = best_time(lambda: linear_cka(X, Y))
    t_plain = best_time(lambda: plain_numpy_linear_cka(X, Y))
    print(
        f"\n3. n = {n_mid}, d = {d_mid}: projkd {t_ours:.3f} s, plain numpy "
        f"{t_plain:.3f} s, ratio projkd / plain = {t_ours / t_plain:.2f}"
    )

    batch, d_mb, n_batches = 256, 512, 20 if quick else 100
    Xb = torch.randn(batch, d_mb)
    Yb = torch.randn(batch, d_mb)
    cka = MinibatchCKA()
    start = time.perf_counter()
    for _ in range(n_batches):
        cka.update(Xb, Yb)
    cka.compute()
    elapsed = time.perf_counter() - start
    print(
        f"\n4. MinibatchCKA, batch {batch}, d = {d_mb}: "
        f"{batch * n_batches / elapsed:,.0f} samples/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    main(parser.parse_args().quick)
