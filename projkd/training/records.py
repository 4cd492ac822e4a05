"""skorch's epoch loop with the batch records kept on the device until read.

skorch's ``run_single_epoch`` reads every batch's loss back to the host
(``step["loss"].item()``) as soon as the step is queued, which makes the CPU
wait for the accelerator to finish the step before it can queue the next
one: the GPU idles for the launch overhead of every batch. Here a batch's
values -- its loss and whatever the net adds with :meth:`EpochRecords.add`
(loss terms, accuracy) -- stay on the device and fill the batch rows of the
history in one transfer when the epoch ends, before ``on_epoch_end``
scorers read them. Until then each batch row is a :class:`PendingRow`: a
``dict`` that reads its own values from the device the first time anyone
looks into it (``history[-1, "batches", -1, "train_loss"]`` in an
``on_batch_end`` callback, ``ProgressBar``'s loss column, a per-batch
``LRScheduler`` monitoring ``train_loss``), so the values are there for
whoever reads them, and a fit where nobody does never waits on the device
within an epoch. A batch whose step was skipped (a non-finite loss with
``nonfinite_loss="skip"``) records no loss at all, so it is left out of the
epoch's means, and the epoch records how many were skipped. The per-step
non-finite flags of :mod:`projkd.training.finite` travel in the same
transfer.

This is projkd's one replacement of a piece of skorch's loop; the fit, the
epochs, the callbacks and the steps stay skorch's. Measured reason: on the
CPU it costs about nothing (``benchmarks/bench_gpu.py --cpu``: an uncached
epoch at 1.04x a plain loop's host time, median of six runs on 2 cores; see
``benchmarks/results/gpu_cpu.md``); its gain, the GPU never idling for a
host read, is what ``bench_gpu.py --gpu`` measures on a card, which no
session has had yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from skorch.dataset import get_len
from skorch.history import History
from torch import Tensor

from .device import DeviceStats

__all__ = ["DeviceRecordsMixin", "EpochRecords", "PendingRow"]


class PendingRow(dict):
    """A batch row of the history whose device values are read on first access.

    Any read (``row[key]``, ``get``, ``in``, iteration, ``items``, ...)
    first moves the values kept with :meth:`defer` to the host (one
    transfer for the row) and writes them in; writes need no read. Pickled
    as a plain ``dict``.

    Examples
    --------
    >>> import torch
    >>> row = PendingRow(train_batch_size=2)
    >>> row.defer("train", ("loss", "acc"), torch.tensor([0.5, 1.0]))
    >>> row["train_loss"], sorted(row)
    (0.5, ['train_acc', 'train_batch_size', 'train_loss'])
    """

    __slots__ = ("_pending",)
    _pending: list[tuple[str, Sequence[str], Tensor]]

    def defer(self, prefix: str, names: Sequence[str], values: Tensor) -> None:
        """Keep ``values`` (a 1-D device tensor) for ``prefix_<name>``, unread."""
        try:
            self._pending.append((prefix, names, values))
        except AttributeError:  # the first: made here, not per row
            self._pending = [(prefix, names, values)]

    def resolve(self) -> None:
        """Read the deferred values into the row."""
        pending = getattr(self, "_pending", None)
        if not pending:
            return
        self._pending = []
        for prefix, names, values in pending:
            floats = values.detach().float().reshape(-1).tolist()
            for name, value in zip(names, floats, strict=True):
                dict.__setitem__(self, f"{prefix}_{name}", value)

    def forget(self) -> None:
        """Drop the deferred values unread (the epoch's transfer wrote them)."""
        self._pending = []

    def __getitem__(self, key: Any) -> Any:
        self.resolve()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.resolve()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.resolve()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:
        self.resolve()
        return super().__iter__()

    def __len__(self) -> int:
        self.resolve()
        return super().__len__()

    def keys(self) -> Any:
        self.resolve()
        return super().keys()

    def values(self) -> Any:
        self.resolve()
        return super().values()

    def items(self) -> Any:
        self.resolve()
        return super().items()

    def copy(self) -> dict[Any, Any]:
        self.resolve()
        return dict(super().items())

    def __eq__(self, other: object) -> bool:
        self.resolve()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self.resolve()
        return super().__repr__()

    def __reduce__(self) -> Any:
        return (dict, (self.copy(),))


class EpochRecords:
    """One epoch's batch records, on the device until :meth:`close`.

    Created once per estimator (in ``initialize_history``), opened at the
    start of each epoch loop and closed at its end. Between the two,
    :meth:`add` keeps values for the current batch without reading them.

    Examples
    --------
    >>> import torch
    >>> rows = [{}, {}]
    >>> records = EpochRecords()
    >>> records.open("train", rows)
    >>> records.add(("acc",), torch.tensor([0.5]), batch=0)
    >>> records.add(("acc",), torch.tensor([1.0]), batch=1)
    >>> records.close()
    >>> rows
    [{'train_acc': 0.5}, {'train_acc': 1.0}]
    """

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.stats: dict[tuple[str, ...], DeviceStats] = {}
        self.skipped: list[int] = []
        self.marked: set[int] = set()  # batches with values, or skipped
        self.flags = DeviceStats()  # per batch: 1.0 if its loss was not finite
        self.gate: Tensor | None = None  # the optimizers' found_inf this epoch
        self.flagged: dict[int, dict[str, float]] = {}

    @property
    def is_open(self) -> bool:
        """Whether an epoch loop is recording."""
        return self.prefix is not None

    def open(self, prefix: str, rows: list[dict[str, Any]]) -> None:
        """Start recording into ``rows`` (the epoch's batch rows), with names
        prefixed ``prefix_`` (``"train"``, ``"valid"``)."""
        self.prefix, self.rows, self.stats, self.skipped = prefix, rows, {}, []
        self.marked, self.flags, self.gate = set(), DeviceStats(), None
        self.flagged = {}

    def add(
        self, names: Sequence[str], values: Tensor, batch: int | None = None
    ) -> None:
        """Keep ``values`` (a 1-D tensor, one per name) for batch ``batch``
        (the current one by default), unread."""
        index = len(self.rows) - 1 if batch is None else batch
        stats = self.stats.get(names)  # type: ignore[call-overload]
        if stats is None:
            stats = self.stats[tuple(names)] = DeviceStats()
        stats.add(index, values)
        self.marked.add(index)
        row = self.rows[index]
        if isinstance(row, PendingRow) and self.prefix is not None:
            row.defer(self.prefix, tuple(names), values)

    def skip(self) -> None:
        """The current batch's step was skipped: it records no values."""
        self.skipped.append(len(self.rows) - 1)
        self.marked.add(len(self.rows) - 1)

    def step_flag(self, device: Any) -> Tensor:
        """The epoch's gate on ``device``: a 0-d float32 tensor, 1.0 once a
        step must not update (an optimizer's ``found_inf``)."""
        if self.gate is None:
            self.gate = torch.zeros((), device=device)
        return self.gate

    def flag(self, bad: Tensor, *, sticky: bool) -> None:
        """Record whether the current batch's loss was not finite (``bad``, a
        0-d bool tensor, unread) and set the gate for its step; ``sticky``:
        once set, it stays set for the rest of the epoch."""
        bad = bad.to(torch.float32).reshape(())
        gate = self.step_flag(bad.device)
        gate.copy_(torch.maximum(gate, bad) if sticky else bad)
        self.flags.add(len(self.rows) - 1, bad.reshape(1))

    def recorded(self, batch: int) -> bool:
        """Whether batch ``batch`` has values (or was skipped)."""
        return batch in self.marked

    def close(self) -> None:
        """Write every value into its batch row (one transfer for the whole
        epoch) and stop recording; skipped batches keep no values, and
        flagged ones (:meth:`flag`) are skipped, their values kept in
        ``flagged``."""
        for row in self.rows:  # this transfer writes every value
            if isinstance(row, PendingRow):
                row.forget()
        kinds = [*self.stats.items(), (("nonfinite",), self.flags)]
        read = DeviceStats.read_all([stats for _, stats in kinds])
        flagged = {index for index, (bad,) in read.pop() if bad}
        self.skipped.extend(sorted(flagged - set(self.skipped)))
        skipped = set(self.skipped)
        for (names, _), rows in zip(kinds, read, strict=False):
            for index, values in rows:
                if index in flagged:
                    self.flagged.setdefault(index, {}).update(
                        zip(names, values, strict=True)
                    )
                row = self.rows[index]
                for name, value in zip(names, values, strict=True):
                    if index in skipped:  # a reader may have resolved it
                        dict.pop(row, f"{self.prefix}_{name}", None)
                    else:
                        dict.__setitem__(row, f"{self.prefix}_{name}", value)
        for index, row in enumerate(self.rows):  # plain rows from now on
            if isinstance(row, PendingRow):
                self.rows[index] = dict(dict.items(row))
        self.prefix, self.rows, self.stats = None, [], {}
        self.flags, self.gate = DeviceStats(), None


class DeviceRecordsMixin:
    """skorch's epoch loop without its per-batch host sync (a skorch mixin).

    Put it before the skorch net class. The net's ``get_loss`` may add
    values for the current batch with ``self.epoch_records_.add(names,
    values)`` (a ``valid_``/``train_`` prefix is added); the batch's loss is
    recorded from the step when ``get_loss`` added no ``"loss"``; a step
    that the net skipped calls ``self.epoch_records_.skip()``. Everything else
    -- the callbacks' ``on_batch_begin``/``on_batch_end`` (``ProgressBar``
    keeps counting batches), batch sizes, the batch count -- is as in
    skorch; training epochs also record ``train_skipped``.
    """

    history: Any
    notify: Any

    def initialize_history(self, *args: Any, **kwargs: Any) -> Any:
        """skorch's history, and the (empty) epoch records."""
        super().initialize_history(*args, **kwargs)  # type: ignore[misc]
        self.epoch_records_ = EpochRecords()
        return self

    def on_batch_begin(
        self, net: Any, batch: Any = None, training: bool = False, **kwargs: Any
    ) -> None:
        """skorch's new batch row, appended without History's slow indexing
        (which costs more host time than a small network's step)."""
        if type(self.history) is History:
            list.__getitem__(self.history, -1)["batches"].append(PendingRow())
        else:
            super().on_batch_begin(  # type: ignore[misc]
                net, batch=batch, training=training, **kwargs
            )

    def run_single_epoch(
        self,
        iterator: Any,
        training: bool,
        prefix: str,
        step_fn: Any,
        **fit_params: Any,
    ) -> None:
        """skorch's epoch loop, with the batch records kept on the device
        until it ends (see :mod:`projkd.training.records`)."""
        if iterator is None:
            return
        with self.recording_epoch(prefix, training) as run_batch:
            for batch in iterator:
                run_batch(batch, step_fn, **fit_params)

    @contextmanager
    def recording_epoch(self, prefix: str, training: bool) -> Iterator[Any]:
        """One epoch's batch records, kept on the device until it ends.

        Yields ``run_batch(batch, step_fn, **fit_params)``, which runs one
        step between the ``on_batch_begin``/``on_batch_end`` notifications
        and returns it. The records reach the history when the block ends,
        the batch count (and for training the skipped batches) when it ends
        normally. :meth:`run_single_epoch` and
        :func:`~projkd.lockstep.fit_lockstep` run their epochs through it.
        """
        records = self.epoch_records_
        # the epoch's batch list, read once: History's own indexing costs
        # more host time than a small network's step
        rows = list.__getitem__(self.history, -1)["batches"]
        records.open(prefix, rows)
        count = 0

        def run_batch(batch: Any, step_fn: Any, **fit_params: Any) -> Any:
            nonlocal count
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            index = len(rows) - 1
            if not records.recorded(index):  # a custom output: its loss alone
                records.add(("loss",), step["loss"].detach().float().reshape(1))
            first = batch[0] if isinstance(batch, tuple | list) else batch
            rows[index][prefix + "_batch_size"] = get_len(first)
            self.notify("on_batch_end", batch=batch, training=training, **step)
            count += 1
            return step

        try:
            yield run_batch
        finally:
            records.close()
        if records.flagged:  # non-finite losses (projkd.training.finite)
            self.nonfinite_batches(records.flagged)  # type: ignore[attr-defined]
        self.history.record(prefix + "_batch_count", count)
        if training:
            self.history.record(prefix + "_skipped", len(records.skipped))

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc,assignment]
        state.pop("epoch_records_", None)  # device tensors of an open epoch
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        if state.get("initialized_"):  # also estimators pickled by projkd 0.1.0
            self.epoch_records_ = EpochRecords()
