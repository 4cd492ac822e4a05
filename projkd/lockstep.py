"""Train several distillers of one teacher in lockstep, on the same batches.

The variants of a comparison (KD, feature distillation with 0, 1 or 3
projectors, ...) differ only in the student's loss and projectors. Trained in
lockstep, each batch is drawn, augmented and run through the teacher *once*,
and every student takes its own step on it with its own optimizer, projectors
and loss weights -- a paired design: the variants see the same augmented views
in the same order. With :class:`EpochSeed` among each estimator's callbacks,
every result equals what a separate ``fit`` of that estimator gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback

from .distiller import ProjectorDistiller
from .errors import InputError, InputTypeError
from .training.batching import PREPARED, keep_prepared
from .utils import seeded

__all__ = ["EpochSeed", "fit_lockstep"]

# what must be equal for the estimators to share batches and teacher outputs
_SHARED = (
    "batch_size",
    "max_epochs",
    "random_state",
    "device",
    "teacher_layer",
    "iterator_train__shuffle",
    "mixed_precision",  # the teacher's outputs are computed once, at one
    "channels_last",  # precision and in one memory format, for all
)


class EpochSeed(Callback):
    """Seed torch at the start of each epoch from ``(seed, epoch, rank)``.

    The random draws of epoch ``e`` (augmentation, dropout) then depend on the
    seed and ``e`` alone: not on what ran before (a resumed run draws as the
    uninterrupted one; variants whose initialisation draws differ see the
    same augmented views). A net trained data-parallel (one with an
    ``accelerator`` of several processes) seeds each process from its rank
    too, so that the processes draw their own augmentation and dropout for
    their slices; a single process, and the first of several, draw as
    before (rank 0 adds nothing to the seed). The shuffled order does not
    come from this stream: array batches draw it from their own ``(seed,
    epoch)`` generator and Accelerate synchronises a ``DataLoader``'s, so it
    stays the same on every process.

    Parameters
    ----------
    seed : int

    Examples
    --------
    >>> from projkd.lockstep import EpochSeed
    >>> callbacks = [EpochSeed(0)]  # ProjectorDistiller(..., callbacks=callbacks)
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        accelerator = getattr(net, "accelerator", None)
        rank = 0 if accelerator is None else int(accelerator.process_index)
        entropy = [self.seed, len(net.history)] + ([rank] if rank else [])
        state = np.random.SeedSequence(entropy).generate_state(1)
        torch.manual_seed(int(state[0]))


def _check(estimators: Sequence[Any]) -> None:
    if not estimators:
        raise InputError("fit_lockstep needs at least one estimator.")
    first = estimators[0]
    for index, est in enumerate(estimators):
        if not isinstance(est, ProjectorDistiller):
            raise InputTypeError(
                f"estimators[{index}] is a {type(est).__name__}; fit_lockstep "
                "trains ProjectorDistiller estimators."
            )
        if getattr(est, "accelerator", None) is not None:
            raise InputTypeError(
                f"estimators[{index}] trains through an accelerator; fit_lockstep "
                "trains in one process, with the estimators' own device and "
                "precision. Fit accelerated estimators separately."
            )
        if est.teacher is not first.teacher:
            raise InputError(
                f"estimators[{index}] has another teacher object; lockstep shares "
                "one teacher forward per batch, so pass the same teacher to all."
            )
        params = est.get_params(deep=False)
        reference = first.get_params(deep=False)
        for name in _SHARED:
            if params.get(name) != reference.get(name):
                raise InputError(
                    f"estimators[{index}].{name} = {params.get(name)!r} differs from "
                    f"estimators[0].{name} = {reference.get(name)!r}; in lockstep "
                    "every estimator shares the batches, so set it equal."
                )
        if repr(est.train_transform) != repr(first.train_transform):
            raise InputError(
                f"estimators[{index}].train_transform differs from estimators[0]'s; "
                "in lockstep each batch is augmented once for all."
            )
    if not isinstance(first.random_state, int | np.integer):
        raise InputError(
            f"random_state={first.random_state!r}: lockstep needs an integer seed, "
            "so that every estimator draws the same batch order."
        )


def fit_lockstep(estimators: Sequence[ProjectorDistiller], X: Any, y: Any) -> list[Any]:
    """Fit distillers of one teacher together, one teacher forward per batch.

    Each estimator is initialised under its seed as its own ``fit`` would,
    and its callbacks run as in ``fit`` (checkpoints resume, schedulers step,
    scorers record); then, epoch by epoch, each batch of the shared order is
    augmented once (``train_transform``) and run through the teacher once, and
    every estimator takes its own optimizer step on it.

    Parameters
    ----------
    estimators : sequence of ProjectorDistiller
        Sharing the teacher object, ``batch_size``, ``max_epochs``, an
        integer ``random_state``, ``device``, ``teacher_layer``,
        ``mixed_precision``, ``channels_last`` and ``train_transform``;
        otherwise free (losses, projectors, optimizers,
        callbacks). Array input only, without a validation split.
    X, y : array-like
        The training data, as for ``fit``.

    Returns
    -------
    estimators : list
        The fitted estimators. With an :class:`EpochSeed` callback in each and
        a student without random layers (dropout), each equals a separate
        ``fit`` with the same data.

    Examples
    --------
    >>> from projkd.lockstep import EpochSeed, fit_lockstep
    >>> # fit_lockstep([est_fd0, est_fd3], X, y)  # each with callbacks=[EpochSeed(0)]
    """
    estimators = list(estimators)
    _check(estimators)
    first = estimators[0]
    for est in estimators:
        if est.train_split is not None:
            raise InputError("fit_lockstep trains without a validation split.")
        est.initialize_for(X, y)
    with seeded(first.random_state, first.device):
        for est in estimators:
            est.notify("on_train_begin", X=X, y=y)
        done = {len(est.history) for est in estimators}
        if len(done) != 1:
            raise InputError(
                f"The estimators resumed at different epochs {sorted(done)}; "
                "delete their checkpoints or fit them separately."
            )
        dataset = first.get_dataset(X, y)
        iterator = first.get_iterator(dataset, training=True)
        kwargs = {"dataset_train": dataset, "dataset_valid": None}
        for _ in range(first.max_epochs - done.pop()):
            for est in estimators:
                est.notify("on_epoch_begin", **kwargs)
            _epoch(estimators, iterator)
            stop = False
            for est in estimators:
                try:
                    est.notify("on_epoch_end", **kwargs)
                except KeyboardInterrupt:  # e.g. a time budget: finish the others
                    stop = True
            if stop:
                break
        for est in estimators:
            est.notify("on_train_end", X=X, y=y)
    return estimators


def _epoch(estimators: list[ProjectorDistiller], iterator: Any) -> None:
    """One epoch: one augmentation and one teacher forward per batch for all,
    every estimator's records kept on the device as in its own ``fit``
    (:meth:`~projkd.training.records.DeviceRecordsMixin.recording_epoch`, the
    one replacement of skorch's epoch loop)."""
    first = estimators[0]
    teacher = any(est.uses_teacher() for est in estimators)
    with ExitStack() as stack:
        steps = [
            stack.enter_context(est.recording_epoch("train", training=True))
            for est in estimators
        ]
        for batch in iterator:
            # one view and one teacher forward for all, kept beside the batch
            Xi = batch[0]
            keep_prepared(Xi, first.prepare_batch(Xi, training=True, teacher=teacher))
            try:
                for est, run_batch in zip(estimators, steps, strict=True):
                    run_batch(batch, est.train_step)
            finally:  # all have had it (an augmentation may hold a view of Xi)
                PREPARED.discard(Xi)
