"""Run AcceleratedProjectorDistiller fits in several CPU processes (gloo).

Used by ``tests/test_distributed.py`` (through :func:`spawn`) and runnable by
hand under ``torchrun``::

    torchrun --nproc_per_node 2 tests/ddp_worker.py

Each process fits every configuration it is given and saves, per
configuration and rank, the trained student's state, the history and the
predictions to ``<out_dir>/<name>-<rank>.pt``; a configuration with a
``"command"`` entry runs that command of :mod:`projkd.experiments` instead
(:func:`run_command`) and saves what it returned.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from typing import Any

import torch
import torch.multiprocessing as mp
from skorch.callbacks import Callback


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (no network needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SeenSamples(Callback):
    """A skorch callback keeping, per epoch, a digest of each training sample
    this process trained on."""

    def initialize(self) -> SeenSamples:
        self.seen_: list[list[str]] = []
        self.dtypes_: set[str] = set()
        return self

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        # the dtype of the student's first layer's output while training
        # (Accelerate casts the wrapped network's outputs back to float32)
        bare = net._prepared_modules_["module"][1]
        first = next(m for m in bare.modules() if hasattr(m, "weight"))
        self.hook_ = first.register_forward_hook(self._record_dtype)

    def _record_dtype(self, module: Any, args: Any, output: Any) -> None:
        if module.training:
            self.dtypes_.add(str(output.dtype))

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        self.hook_.remove()

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.seen_.append([])
        # what the accelerator made of the student (DDP, compiled, ...)
        self.wrapper_ = type(net.module_).__name__

    def on_batch_end(
        self, net: Any, batch: Any = None, training: bool = False, **kwargs: Any
    ) -> None:
        if training:
            inputs = batch[0]
            rows = inputs.detach().cpu().numpy().reshape(len(inputs), -1)
            digests = (hashlib.sha1(row.tobytes()).hexdigest() for row in rows)
            self.seen_[-1].extend(digests)


class RecordingNoise:
    """A training transform adding uniform noise; keeps its first draws per
    batch (to see whether the processes draw alike)."""

    def __init__(self) -> None:
        self.draws: list[list[float]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(len(x), device=x.device)
        self.draws.append(noise[:4].tolist())
        return x + 0.01 * noise.reshape(-1, *[1] * (x.ndim - 1))


def fit_one(name: str, config: dict[str, Any], out_dir: str) -> None:
    """Fit one configuration in this process and save what the tests compare."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from projkd.parallel import AcceleratedProjectorDistiller

    params = dict(config["params"])
    seen = SeenSamples()
    params["callbacks"] = [*params.get("callbacks", []), ("seen", seen)]
    X, y = config["X"], config["y"]
    AcceleratorState._reset_state()  # each configuration its own precision
    est = AcceleratedProjectorDistiller(
        config["teacher"],
        config["student"],
        accelerator=Accelerator(cpu=True, **config.get("accelerator", {})),
        **params,
    )
    est.fit(X, y)
    rank = int(os.environ.get("RANK", "0"))
    torch.save(
        {
            "seen": seen.seen_,
            "state": {k: v.detach().cpu() for k, v in est.module_.state_dict().items()},
            "projectors": {
                k: v.detach().cpu() for k, v in est.projectors_.state_dict().items()
            },
            "history": {
                key: est.history[:, key]
                for key in ("train_loss", "train_acc", "train_feat", "valid_loss")
                if key in est.history[-1]
            },
            "n_batches": [len(epoch["batches"]) for epoch in est.history],
            "n_train_batches": [
                sum("train_loss" in batch for batch in epoch["batches"])
                for epoch in est.history
            ],
            "proba": est.predict_proba(X),
            "module_type": type(est.module_).__name__,
            "wrapper": getattr(seen, "wrapper_", None),  # None: no epoch trained
            "draws": getattr(params.get("train_transform"), "draws", None),
            "train_dtypes": sorted(seen.dtypes_),
            "channels_last": [
                bool(p.is_contiguous(memory_format=torch.channels_last))
                for p in est.module_.parameters()
                if p.ndim == 4
            ],
        },
        os.path.join(out_dir, f"{name}-{rank}.pt"),
    )


def _without_batchnorm(net: Any) -> Any:
    for index, layer in enumerate(net.features):
        if isinstance(layer, torch.nn.BatchNorm2d):
            net.features[index] = torch.nn.Identity()
    return net


def register_batchnorm_free_pair() -> None:
    """Register ``digits_plain_teacher``/``digits_plain_student``: the digits
    pair without BatchNorm (so that N processes equal one), in this process
    only (spawned workers; the test session's zoo stays as it is)."""
    from projkd.models import DigitsCNN, list_models
    from projkd.models._registry import register_model

    if "digits_plain_teacher" in list_models():
        return

    def digits_plain_teacher(num_classes: int = 10, in_channels: int = 1) -> Any:
        net = DigitsCNN(8, 32, num_classes=num_classes, in_channels=in_channels)
        return _without_batchnorm(net)

    def digits_plain_student(num_classes: int = 10, in_channels: int = 1) -> Any:
        net = DigitsCNN(4, 32, num_classes=num_classes, in_channels=in_channels)
        return _without_batchnorm(net)

    register_model(digits_plain_teacher)
    register_model(digits_plain_student)


def run_command(name: str, config: dict[str, Any], out_dir: str) -> None:
    """Run a command of :mod:`projkd.experiments` in this process (``reproduce``
    with keyword arguments; ``distill`` or ``train_teacher_run`` with a
    ``RunSpec``'s fields and distiller parameters; ``"cli"``: ``projkd`` with
    ``argv``, keeping what it printed); save what it returned."""
    from projkd import experiments

    register_batchnorm_free_pair()
    if config["command"] == "cli":  # the command line, with its printed report
        import contextlib
        import io

        from projkd.experiments.cli import main

        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            rc = main(config["argv"])
        result = {"rc": rc, "stdout": stdout.getvalue()}
        rank = int(os.environ.get("RANK", "0"))
        torch.save(result, os.path.join(out_dir, f"{name}-{rank}.pt"))
        return
    command = getattr(experiments, config["command"])
    if config["command"] == "reproduce":
        result = command(**config["kwargs"])
    else:
        spec = experiments.RunSpec(**config["kwargs"])
        result = command(spec, **config.get("params", {}))
    rank = int(os.environ.get("RANK", "0"))
    torch.save(result, os.path.join(out_dir, f"{name}-{rank}.pt"))


def _worker(
    rank: int, world_size: int, port: int, configs: dict[str, Any], out_dir: str
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    for name, config in configs.items():
        run = run_command if "command" in config else fit_one
        run(name, config, out_dir)


def spawn(
    configs: dict[str, Any], out_dir: str, *, world_size: int = 2, timeout: float = 300
) -> None:
    """Fit ``configs`` in ``world_size`` fresh processes; re-raise a failure.

    A process that fails (or a run that hangs past ``timeout`` seconds) ends
    them all, so a broken collective cannot stall the test suite.
    """
    context = mp.start_processes(
        _worker,
        args=(world_size, free_port(), configs, out_dir),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            raise TimeoutError(f"the {world_size} processes ran past {timeout} s")


def _demo_configs() -> dict[str, Any]:
    """A tiny BatchNorm-free distillation on digits (for a torchrun launch)."""
    from torch import nn

    from projkd.data import load_digits
    from projkd.models import DigitsCNN

    X, y = load_digits()
    torch.manual_seed(0)
    teacher = DigitsCNN(width=8, n_features=32).eval()
    student = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    return {
        "demo": {
            "X": X[:512],
            "y": y[:512],
            "teacher": teacher,
            "student": student,
            "params": dict(
                batch_size=32,
                max_epochs=3,
                optimizer=torch.optim.SGD,
                lr=0.1,
                train_split=None,
                verbose=1,
                random_state=0,
            ),
        }
    }


if __name__ == "__main__":  # torchrun --nproc_per_node 2 tests/ddp_worker.py [OUT]
    torch.set_num_threads(1)
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    for key, value in _demo_configs().items():
        fit_one(key, value, out)
        state = torch.load(
            os.path.join(out, f"{key}-{os.environ.get('RANK', '0')}.pt"),
            weights_only=False,
        )
        checksum = sum(float(v.double().sum()) for v in state["state"].values())
        losses = [round(float(v), 6) for v in state["history"]["train_loss"]]
        print(
            f"rank {os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}: "
            f"batches per epoch {state['n_batches']}, "
            f"train_loss {losses}, "
            f"weight checksum {checksum:.8f}",
            flush=True,
        )
