"""The cost of a cross-validated search, with and without the teacher cache.

Run: python benchmarks/bench_search.py [--quick] [--data-root ../shared/data/cifar100]

Prints ratios measured side by side in one run:
1. samples run through the teacher during a 3-fold x 4-candidate GridSearchCV
   divided by the training-set size, with and without the cache;
2. search wall time with the cache / without, resnet32x4 -> resnet8x4 on a
   CIFAR-100 subset (the teacher costs more than the student);
3. ProjectorDistiller epoch time / a minimal hand-written PyTorch loop doing
   the same computation (teacher forward every step, same models, projectors,
   optimizer and batch size), uncached and cached;
4. peak memory (max RSS, each in a fresh process) of the search / one fit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import GridSearchCV

from projkd import ProjectorDistiller
from projkd.data import CIFAR100_MEAN, CIFAR100_STD, load_cifar100, normalize
from projkd.features import forward_with_features
from projkd.models import get_model
from projkd.projectors import ProjectorEnsemble
from projkd.teacher import clear_teacher_cache
from projkd.utils import seeded

GRID = {"n_projectors": [1, 2, 3, 4]}
SETTINGS = dict(
    max_epochs=1,
    batch_size=64,
    lr=0.05,
    optimizer__momentum=0.9,
    train_split=None,
    verbose=0,
    random_state=0,
    classes=np.arange(100),  # a subset may miss classes the teacher predicts
)


def model(name: str, seed: int = 0) -> torch.nn.Module:
    """A zoo network initialised under ``seed``, the same in every process."""
    with seeded(seed, "cpu"):
        return get_model(name)


def load_subset(root: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if Path(root).is_dir():
        data = load_cifar100(root)
        X, y = data.X_train[:n], data.y_train[:n]
    else:  # synthetic stand-in of the same shape, said so in the output
        print(f"(no CIFAR-100 at {root}: random images)")
        rng = np.random.default_rng(0)
        X = rng.random((n, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 100, n)
    return normalize(X, CIFAR100_MEAN, CIFAR100_STD), y


class TeacherCounter:
    """Counts the samples a teacher's classifier sees (every forward reaches it)."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        self.samples = 0
        teacher.fc.register_forward_hook(self)

    def __call__(self, module, args, output) -> None:
        self.samples += len(args[0])


def make(teacher, cache: bool) -> ProjectorDistiller:
    return ProjectorDistiller(
        teacher, model("resnet8x4"), cache_teacher=cache, **SETTINGS
    )


def search(teacher, X, y, cache: bool) -> tuple[float, int]:
    clear_teacher_cache()
    counter = TeacherCounter(teacher)
    start = time.perf_counter()
    GridSearchCV(make(teacher, cache), GRID, cv=3).fit(X, y)
    return time.perf_counter() - start, counter.samples


def plain_loop_epoch(teacher, student, X, y, n_projectors=3, batch_size=64) -> float:
    """The same computation as ProjectorDistiller's uncached epoch, by hand."""
    _, d_s = forward_with_features(student.eval(), torch.as_tensor(X[:2]))[1].shape
    d_t = forward_with_features(teacher, torch.as_tensor(X[:2]))[1].shape[1]
    projectors = ProjectorEnsemble(d_s, d_t, n_projectors)
    params = list(student.parameters()) + list(projectors.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
    student.train()
    start = time.perf_counter()
    for index in torch.randperm(len(X_t)).split(batch_size):
        xb, yb = X_t[index], y_t[index]
        with torch.no_grad():
            _, t_features = forward_with_features(teacher, xb)
        logits, features = forward_with_features(student, xb)
        feat = (1 - F.cosine_similarity(projectors(features), t_features)).mean()
        loss = F.cross_entropy(logits, yb) + 25.0 * feat
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def distiller_epoch(teacher, X, y, cache: bool, epochs: int = 2) -> float:
    clear_teacher_cache()
    est = ProjectorDistiller(
        teacher,
        model("resnet8x4"),
        cache_teacher=cache,
        **{**SETTINGS, "max_epochs": epochs},
    ).fit(X, y)
    return float(np.mean(est.history[:, "dur"][1:]))  # skip the first (cache fill)


def peak_rss(mode: str, subset: Path) -> float:
    """Max RSS (MiB) of a fresh process running one fit or the whole search on
    the subset saved at ``subset`` (so that loading CIFAR-100 does not count)."""
    command = [sys.executable, "-W", "ignore", __file__, "--child", mode, str(subset)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["max_rss_mib"]


def child(mode: str, subset: str) -> None:
    torch.manual_seed(0)
    data = np.load(subset)
    X, y = data["X"], data["y"]
    teacher = model("resnet32x4", seed=1).eval()
    if mode == "fit":
        make(teacher, True).fit(X, y)
    else:
        GridSearchCV(make(teacher, True), GRID, cv=3).fit(X, y)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"max_rss_mib": rss}))


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    X, y = load_subset(args.data_root, args.n)
    teacher = model("resnet32x4", seed=1).eval()
    print(
        f"resnet32x4 -> resnet8x4, {len(X)} CIFAR-100 images, 3-fold x 4 candidates,"
        f" 1 epoch each, {torch.get_num_threads()} threads\n"
    )

    t_cached, n_cached = search(teacher, X, y, cache=True)
    t_plain, n_plain = search(teacher, X, y, cache=False)
    print("| measure | value |")
    print("|---|---:|")
    print(f"| teacher samples / training-set size, cached | {n_cached / len(X):.2f} |")
    print(f"| teacher samples / training-set size, uncached | {n_plain / len(X):.2f} |")
    print(
        f"| search wall time cached / uncached | {t_cached / t_plain:.2f} "
        f"({t_cached:.0f} s / {t_plain:.0f} s) |"
    )

    student = model("resnet8x4")
    loop = np.mean([plain_loop_epoch(teacher, student, X, y) for _ in range(2)])
    ours = distiller_epoch(teacher, X, y, cache=False, epochs=3)
    ours_cached = distiller_epoch(teacher, X, y, cache=True, epochs=3)
    print(
        f"| epoch time ProjectorDistiller / plain loop, uncached | {ours / loop:.2f} |"
    )
    print(
        "| epoch time ProjectorDistiller cached / plain loop | "
        f"{ours_cached / loop:.2f} |"
    )

    with tempfile.TemporaryDirectory() as folder:
        subset = Path(folder) / "subset.npz"
        np.savez(subset, X=X, y=y)
        fit_rss, search_rss = peak_rss("fit", subset), peak_rss("search", subset)
    print(
        f"| peak memory search / one fit | {search_rss / fit_rss:.2f} "
        f"({search_rss:.0f} MiB / {fit_rss:.0f} MiB) |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root",
        default=str(
            Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar100"
        ),
    )
    parser.add_argument("--n", type=int, default=600, help="images in the subset")
    parser.add_argument("--quick", action="store_true", help="120 images")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.n = 120
    if arguments.child:
        child(*arguments.child)
    else:
        main(arguments)
