"""Run AcceleratedProjectorDistiller fits in several CPU processes (gloo).

Used by ``tests/test_distributed.py`` (through :func:`spawn`) and runnable by
hand under ``torchrun``::

    torchrun --nproc_per_node 2 tests/ddp_worker.py

Each process fits every configuration it is given and saves, per
configuration and rank, the trained student's state, the history and the
predictions to ``<out_dir>/<name>-<rank>.pt``.
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
        return self

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.seen_.append([])

    def on_batch_end(
        self, net: Any, batch: Any = None, training: bool = False, **kwargs: Any
    ) -> None:
        if training:
            inputs = batch[0]
            inputs = getattr(inputs, "inputs", inputs)  # a CachedTeacherBatch
            rows = inputs.detach().cpu().numpy().reshape(len(inputs), -1)
            digests = (hashlib.sha1(row.tobytes()).hexdigest() for row in rows)
            self.seen_[-1].extend(digests)


def fit_one(name: str, config: dict[str, Any], out_dir: str) -> None:
    """Fit one configuration in this process and save what the tests compare."""
    from accelerate import Accelerator

    from projkd.accelerate import AcceleratedProjectorDistiller

    params = dict(config["params"])
    seen = SeenSamples()
    params["callbacks"] = [*params.get("callbacks", []), ("seen", seen)]
    X, y = config["X"], config["y"]
    est = AcceleratedProjectorDistiller(
        config["teacher"],
        config["student"],
        accelerator=Accelerator(cpu=True),
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
        },
        os.path.join(out_dir, f"{name}-{rank}.pt"),
    )


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
        fit_one(name, config, out_dir)


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
