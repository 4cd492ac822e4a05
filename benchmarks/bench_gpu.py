"""GPU-grade training: projkd's fast path against hand-written loops.

GPU mode (one command, < 4 minutes on one H100; random CIFAR-shaped data
resident on the GPU, which is as good as real data for speed)::

    python benchmarks/bench_gpu.py --gpu

For resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2 (100 classes, k = 3
linear projectors, feature weight 25, SGD lr 0.05 momentum 0.9 weight decay
5e-4, RandomCropFlip on the device, so the teacher runs every step), side by
side in one run, training images/s of

(a) ``reference``: a hand-written loop in the way of the authors' code
    (chenyd7/PEFD): fp32, eager, three separate ``Linear`` projectors, a
    ``loss.item()`` per batch, batch 64;
(b) ``hand fast``: a hand-written best-practice loop -- bf16 autocast,
    channels_last, ``torch.compile``, data on the GPU, one fused projector
    GEMM, no per-batch sync -- at batch 64 and 512;
(c) ``projkd fast``: :class:`~projkd.ProjectorDistiller` with the settings of
    (b) (``mixed_precision="bf16", channels_last=True, compile=True``),
    timed on its second epoch (the first compiles).

It prints projkd fast / hand fast (target >= 0.95), projkd fast / reference,
and the fraction of the card's bf16 peak the distillation step reaches
(FLOPs of one step counted with ``torch.utils.flop_counter.FlopCounterMode``;
the peak is that of a large bf16 GEMM measured in the same run),
and writes the table to ``benchmarks/results/gpu.md`` with the card's name.
``--pairs`` and ``--batch-sizes`` trim the run.

To run it on a lent GPU machine (no skorch there; see ``../shared/GPU.md``)::

    echo /.gpu/ >> .git/info/exclude
    python3 -m pip download --no-deps -d .gpu/whl skorch==1.4.0   # once, here
    # then, as the device call (timeout_s=420):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site \\
        .gpu/whl/*.whl && export PYTHONPATH=/tmp/site:. && \\
        python3 benchmarks/bench_gpu.py --gpu --out $OUT/gpu.md

CPU mode (``--cpu``; ``--tiny`` is the seconds-long version the test suite
runs) measures, side by side on this machine: bf16 against fp32 test
accuracy of a distilled digits student (target: within 3 points); the epoch
time of the default fp32 path without the teacher cache against a plain loop
doing the same work (target: within 10%); and the per-step time with the
teacher cache on a tiny MLP pair, where host overhead dominates, against a
plain cached loop (target: within 15%). Written to
``benchmarks/results/gpu_cpu.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback
from torch import nn

from projkd import ProjectorDistiller
from projkd.augment import RandomCropFlip
from projkd.data import load_digits
from projkd.models import DigitsCNN, get_model

RESULTS = Path(__file__).parent / "results"
PAIRS = {"resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"),
         "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2")}  # fmt: skip
K, BETA, LR, MOMENTUM, WD = 3, 25.0, 0.05, 0.9, 5e-4


# ---------------------------------------------------------------- helpers
def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[Any, Any]:
    """The zoo's forward_features/forward_head, pooled features."""
    f = model.forward_features(x)
    logits = model.forward_head(f)
    return logits, f.flatten(2).mean(2) if f.ndim > 2 else f


def feature_term(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(projected, target, dim=1)).mean()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def widths(teacher: nn.Module, student: nn.Module, shape, device) -> tuple[int, int]:
    x = torch.zeros(2, *shape, device=device)
    with torch.no_grad():
        teacher.eval(), student.eval()
        d_t = features_and_logits(teacher, x)[1].shape[1]
        d_s = features_and_logits(student, x)[1].shape[1]
    student.train()
    return d_s, d_t


# ------------------------------------------------------------ GPU loops
def reference_loop(teacher, student, X, Y, batch_size, steps, device) -> float:
    """(a) PEFD's way: fp32, eager, k separate Linear projectors, .item()."""
    d_s, d_t = widths(teacher, student, X.shape[1:], device)
    projectors = nn.ModuleList(nn.Linear(d_s, d_t) for _ in range(K)).to(device)
    params = [*student.parameters(), *projectors.parameters()]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    augment = RandomCropFlip()
    losses = []

    def step(i: int) -> None:
        index = torch.randint(0, len(X), (batch_size,), device=device)
        x, y = augment(X[index]), Y[index]
        with torch.no_grad():
            _, t = features_and_logits(teacher, x)
        logits, s = features_and_logits(student, x)
        projected = torch.stack([torch.relu(p(s)) for p in projectors]).mean(0)
        loss = F.cross_entropy(logits, y) + BETA * feature_term(projected, t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # the reference logs every batch

    return _time_steps(step, steps, warmup=3, device=device) * batch_size


def hand_fast_loop(
    teacher, student, X, Y, batch_size, steps, device, backend: str = "inductor"
) -> float:
    """(b) best practice: bf16, channels_last, compile, fused GEMM, no sync."""
    cl = torch.channels_last
    teacher, student = teacher.to(memory_format=cl), student.to(memory_format=cl)
    d_s, d_t = widths(teacher, student, X.shape[1:], device)
    layers = [nn.Linear(d_s, d_t) for _ in range(K)]
    W = nn.Parameter(torch.cat([layer.weight.data for layer in layers]).to(device))
    b = nn.Parameter(torch.cat([layer.bias.data for layer in layers]).to(device))
    params = [*student.parameters(), W, b]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    augment = RandomCropFlip()
    student_forward = torch.compile(
        lambda x: features_and_logits(student, x), backend=backend
    )
    teacher_forward = torch.compile(
        lambda x: features_and_logits(teacher, x), backend=backend
    )
    project = torch.compile(
        lambda s: torch.relu(F.linear(s, W, b).unflatten(1, (K, d_t))).mean(1),
        backend=backend,
    )
    total = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal total
        index = torch.randint(0, len(X), (batch_size,), device=device)
        x = augment(X[index]).contiguous(memory_format=cl)
        y = Y[index]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            with torch.no_grad():
                _, t = teacher_forward(x)
            logits, s = student_forward(x)
            projected = project(s)
        loss = F.cross_entropy(logits.float(), y) + BETA * feature_term(
            projected.float(), t.float()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = total + loss.detach()  # no host sync

    return _time_steps(step, steps, warmup=3, device=device) * batch_size


def _time_steps(step, steps: int, warmup: int, device) -> float:
    """Steps per second after ``warmup`` steps (compilation, autotuning)."""
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return steps / (time.perf_counter() - start)


def projkd_fast(
    teacher, student, X, y_host, batch_size, steps, device, backend: str = "inductor"
) -> float:
    """(c) projkd with (b)'s settings, timed on its second epoch."""
    n = batch_size * steps
    est = ProjectorDistiller(
        teacher,
        student,
        n_projectors=K,
        feature_weight=BETA,
        train_transform=RandomCropFlip(),
        mixed_precision="bf16",
        channels_last=True,
        compile=True,
        compile__backend=backend,
        device=str(device),
        batch_size=batch_size,
        max_epochs=2,
        lr=LR,
        optimizer=torch.optim.SGD,
        optimizer__momentum=MOMENTUM,
        optimizer__weight_decay=WD,
        iterator_train__drop_last=True,
        classes=np.arange(100),
        train_split=None,
        verbose=0,
        random_state=0,
    )
    est.fit(X[:n], y_host[:n])
    return n / est.history[-1, "dur"]


def step_flops(teacher, student, batch_size, device) -> float:
    """FLOPs of one distillation step (teacher forward, student forward and
    backward, projectors), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    d_s, d_t = widths(teacher, student, (3, 32, 32), device)
    W = torch.zeros(K * d_t, d_s, device=device, requires_grad=True)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            _, t = features_and_logits(teacher, x)
        logits, s = features_and_logits(student, x)
        projected = torch.relu(F.linear(s, W).unflatten(1, (K, d_t))).mean(1)
        loss = F.cross_entropy(logits, y) + BETA * feature_term(projected, t)
        loss.backward()
    return float(counter.get_total_flops())


def gemm_peak(device: Any, n: int = 8192, repeats: int = 20) -> float:
    """The bf16 FLOP/s a large square GEMM reaches on ``device``, measured
    in this run: the denominator of the peak fraction (a datasheet's dense
    figure is not what the card sustains; on the H200 it is 989e12, about
    790e12 was measured)."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def run_gpu(pairs: list[str], batch_sizes: list[int], out: Path) -> str:
    device = torch.device("cuda")
    card = torch.cuda.get_device_name(device)
    peak = gemm_peak(device)
    print(f"{card}: an 8192^3 bf16 GEMM runs at {peak / 1e12:.0f} TFLOP/s", flush=True)
    steps = {64: 60, 512: 15}
    rows = []
    for pair in pairs:
        teacher_name, student_name = PAIRS[pair]
        torch.manual_seed(0)
        teacher = get_model(teacher_name).to(device).eval().requires_grad_(False)
        X = torch.randn(512 * 20, 3, 32, 32, device=device)
        y_host = np.random.RandomState(0).randint(0, 100, len(X))
        Y = torch.as_tensor(y_host, device=device)

        def student(name: str = student_name) -> nn.Module:
            torch.manual_seed(1)
            return get_model(name).to(device)

        ref = reference_loop(teacher, student(), X, Y, 64, steps[64], device)
        for bs in batch_sizes:
            n_steps = steps.get(bs, 20)
            hand = hand_fast_loop(
                get_model(teacher_name).to(device).eval().requires_grad_(False),
                student(),
                X,
                Y,
                bs,
                n_steps,
                device,
            )
            ours = projkd_fast(teacher, student(), X, y_host, bs, n_steps, device)
            flops = step_flops(teacher, student(), bs, device) / bs
            fraction = flops * ours / peak
            rows.append((pair, bs, ref, hand, ours, fraction))
            print(
                f"{pair} batch {bs}: reference(64) {ref:,.0f} img/s, hand fast "
                f"{hand:,.0f}, projkd fast {ours:,.0f}; projkd/hand "
                f"{ours / hand:.3f}, projkd/reference {ours / ref:.2f}, "
                f"{fraction:.1%} of bf16 peak",
                flush=True,
            )
    lines = [
        "# GPU training throughput (`benchmarks/bench_gpu.py --gpu`)",
        "",
        f"Card: **{card}**; torch {torch.__version__}; random CIFAR-shaped data "
        "resident on the GPU; k = 3 linear projectors; RandomCropFlip on the "
        "device (the teacher runs every step). Images/s of training. The peak "
        "fraction's denominator is a bf16 8192^3 GEMM measured in the same run: "
        f"{peak / 1e12:.0f} TFLOP/s.",
        "",
        "| pair | batch | reference fp32 (batch 64) | hand fast | projkd fast "
        "| projkd / hand (>= 0.95) | projkd / reference | bf16 peak fraction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair, bs, ref, hand, ours, fraction in rows:
        lines.append(
            f"| {pair} | {bs} | {ref:,.0f} | {hand:,.0f} | {ours:,.0f} | "
            f"{ours / hand:.3f} | {ours / ref:.2f} | {fraction:.1%} |"
        )
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


# ------------------------------------------------------------ CPU checks
def digits_accuracy(tiny: bool) -> tuple[float, float]:
    """Test accuracy of a digits student distilled in fp32 and in bf16."""
    from sklearn.model_selection import train_test_split
    from skorch import NeuralNetClassifier

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.4, stratify=y, random_state=0
    )
    if tiny:
        X_train, y_train = X_train[:128], y_train[:128]
    epochs = 1 if tiny else 15
    torch.manual_seed(0)
    teacher = NeuralNetClassifier(
        DigitsCNN(width=16, n_features=64),
        optimizer=torch.optim.Adam,
        lr=3e-3,
        max_epochs=epochs,
        batch_size=64,
        train_split=None,
        verbose=0,
    ).fit(X_train, y_train)
    scores = []
    for precision in (None, "bf16"):
        est = ProjectorDistiller(
            teacher.module_.eval(),
            DigitsCNN,
            student__width=8,
            mixed_precision=precision,
            optimizer=torch.optim.Adam,
            lr=3e-3,
            max_epochs=epochs,
            batch_size=64,
            train_split=None,
            verbose=0,
            random_state=0,
        ).fit(X_train, y_train)
        scores.append(est.score(X_test, y_test))
    return scores[0], scores[1]


class _ThreadTimer(Callback):
    """Records each epoch's CPU time of the training thread (``thread_dur``)."""

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.start_ = time.thread_time()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        net.history.record("thread_dur", time.thread_time() - self.start_)


def _plain_epoch(teacher, student, X, Y, outputs, batch_size, optimizer, project):
    """A hand-written epoch: shuffle, slice, (teacher), student, loss, step."""
    order = torch.randperm(len(X))
    for start in range(0, len(X), batch_size):
        index = order[start : start + batch_size]
        x, y = X[index], Y[index]
        if outputs is None:
            with torch.no_grad():
                z_t, t = features_and_logits_any(teacher, x)
        else:
            z_t, t = outputs[0][index], outputs[1][index]
        logits, s = features_and_logits_any(student, x)
        kd = 16 * F.kl_div(
            F.log_softmax(logits / 4, 1),
            F.log_softmax(z_t / 4, 1),
            reduction="batchmean",
            log_target=True,
        )
        loss = F.cross_entropy(logits, y) + 0.0 * kd
        loss = loss + BETA * feature_term(project(s), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def features_and_logits_any(model: nn.Module, x: torch.Tensor) -> tuple[Any, Any]:
    if hasattr(model, "forward_features"):
        return features_and_logits(model, x)
    features = model[:-1](x)  # an MLP: the input of its last Linear
    return model[-1](features), features


def overhead_ratio(
    teacher: nn.Module,
    make_student,
    X: np.ndarray,
    y: np.ndarray,
    *,
    cached: bool,
    batch_size: int,
    repeats: int,
) -> tuple[float, float]:
    """Epoch seconds of projkd (default fp32 path) and of a plain loop doing
    the same work, measured alternately in one process."""
    from projkd.projectors import ProjectorEnsemble

    est = ProjectorDistiller(
        teacher,
        make_student(),
        cache_teacher=cached,
        max_epochs=1,
        batch_size=batch_size,
        lr=0.01,
        train_split=None,
        verbose=0,
        random_state=0,
        callbacks=[_ThreadTimer()],
    ).fit(X, y)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(y)
    student = make_student()
    d_s, d_t = est.n_student_features_, est.n_teacher_features_
    project = ProjectorEnsemble(d_s, d_t, K)
    params = [*student.parameters(), *project.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    outputs = None
    if cached:
        with torch.no_grad():
            outputs = features_and_logits_any(teacher, Xt)

    def plain() -> float:
        student.train()
        start = time.thread_time()
        _plain_epoch(teacher, student, Xt, Yt, outputs, batch_size, optimizer, project)
        return time.thread_time() - start

    def ours() -> float:
        est.partial_fit(X, y)  # one more epoch; its epoch timer excludes setup
        return est.history[-1, "thread_dur"]

    plain()  # warm-up
    plain_times, our_times = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        plain_times.append(plain())
        our_times.append(ours())
    return statistics.median(our_times), statistics.median(plain_times)


def run_cpu(tiny: bool, out: Path) -> str:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # so that the thread's CPU time is all the work
    repeats = 1 if tiny else 7
    fp32, bf16 = digits_accuracy(tiny)
    X, y = load_digits()
    if tiny:
        X, y = X[:128], y[:128]
    teacher = DigitsCNN(width=16, n_features=64).eval()
    uncached = overhead_ratio(
        teacher,
        lambda: DigitsCNN(width=8),
        X,
        y,
        cached=False,
        batch_size=64,
        repeats=repeats,
    )
    rng = np.random.RandomState(0)
    n = 256 if tiny else 4096
    X_mlp = rng.randn(n, 32).astype(np.float32)
    y_mlp = rng.randint(0, 4, n)
    mlp_teacher = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    cached = overhead_ratio(
        mlp_teacher,
        lambda: nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)),
        X_mlp,
        y_mlp,
        cached=True,
        batch_size=64,
        repeats=repeats,
    )
    rows = [
        ("digits test accuracy, bf16 - fp32 (points)", f"{100 * (bf16 - fp32):+.1f}",
         ">= -3", f"fp32 {fp32:.3f}, bf16 {bf16:.3f}"),
        ("uncached fp32 epoch, projkd / plain loop", f"{uncached[0] / uncached[1]:.3f}",
         "<= 1.10", f"{uncached[0] * 1e3:.0f} ms vs {uncached[1] * 1e3:.0f} ms"),
        ("cached step, tiny MLP pair, projkd / plain loop",
         f"{cached[0] / cached[1]:.3f}", "<= 1.15",
         f"{cached[0] * 1e3:.0f} ms vs {cached[1] * 1e3:.0f} ms per epoch "
         f"({len(X_mlp) // 64} steps)"),
    ]  # fmt: skip
    lines = [
        "# Fast path on the CPU (`benchmarks/bench_gpu.py --cpu"
        + (" --tiny" if tiny else "")
        + "`)",
        "",
        f"torch {torch.__version__}, one torch thread. Medians of {repeats} "
        "alternating epochs of projkd (epochs of one fit, without the per-fit "
        "setup) and of a hand-written loop doing the same work (CE + KD + "
        "feature term, k = 3 fused projectors, SGD, batch 64), timed as the "
        "training thread's CPU time (`time.thread_time`), which a busy shared "
        "machine disturbs less than wall-clock time.",
        "",
        f"Machine: {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run (shared with other jobs).",
        "",
        "| measurement | value | target | detail |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    torch.set_num_threads(threads)
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="the CUDA benchmark")
    mode.add_argument("--cpu", action="store_true", help="the CPU checks (default)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long CPU run")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 512])
    parser.add_argument("--out", type=Path, default=None, help="the Markdown table")
    args = parser.parse_args(argv)
    if args.gpu:
        if not torch.cuda.is_available():
            parser.error("--gpu needs CUDA; run --cpu here")
        out = args.out or RESULTS / "gpu.md"
        text = run_gpu(args.pairs, args.batch_sizes, out)
    else:
        out = args.out or RESULTS / "gpu_cpu.md"
        text = run_cpu(args.tiny, out)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
