"""skorch nets trained data-parallel through Hugging Face Accelerate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import zip_longest
from numbers import Integral
from typing import TYPE_CHECKING, Any

import torch
from skorch.dataset import unpack_data
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..errors import InputError
from ..features import FeatureReader
from ..training.batching import ArrayBatches
from ..training.device import Prefetcher
from .process import all_gather_objects, broadcast_buffers, broadcast_object
from .sharding import OnDevice, ShardedArrayBatches

if TYPE_CHECKING:  # a mixin of skorch nets: type-check it as one
    from skorch import NeuralNet as _Host
else:
    _Host = object

__all__ = ["DataParallelMixin", "FeatureModule"]


class FeatureModule(nn.Module):
    """A network whose forward pass can also return its penultimate features.

    This is what the accelerator wraps in DDP: DDP synchronises gradients
    only for work done inside its own ``forward``, so the features must come
    out of that call, not from ``forward_features`` called on the inner
    network beside it.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or None, default=None
        As in :func:`projkd.features.forward_with_features`.
    hints : tuple of str, default=()
        Hint layers whose maps the forward pass returns too.
    """

    def __init__(
        self, model: nn.Module, layer: str | None = None, hints: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.hints = tuple(hints)

    def forward(self, x: Any, features: bool = False, **kwargs: Any) -> Any:
        """``model(x, **kwargs)``, or ``(output, features, maps)`` with
        ``features=True`` (:meth:`~projkd.features.FeatureReader.run`)."""
        if features:
            reader = FeatureReader(
                self.model, self.layer, network="student", hints=self.hints
            )
            return reader.run(x, **kwargs)
        return self.model(x, **kwargs)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class DataParallelMixin(_Host):
    """Train a skorch net data-parallel through an ``accelerate.Accelerator``.

    Mix it in before a skorch net class (``class Net(DataParallelMixin,
    NeuralNetClassifier)``). Only modules with trainable parameters are
    wrapped in DDP; the others and the criteria are moved to the device.
    Training batches of arrays (:class:`~projkd.training.batching.ArrayBatches`)
    are sharded per process with one shuffled order for all; a ``Dataset``
    goes through Accelerate's sharded ``DataLoader``. The history's training
    records are gathered across processes at each epoch's end; evaluation runs
    the whole data on every process with the bare networks; only the main
    process saves.

    It stands on its own rather than on skorch's
    :class:`~skorch.hf.AccelerateMixin`, whose parameters it takes: that
    mixin prepares every module and every iterator, gathers each evaluation
    batch across processes and unwraps and re-wraps the networks at every
    checkpoint, none of which fits here, so most of its methods would be
    skipped. The contract, hook by hook (skorch's, unless said otherwise):

    - ``__init__``: ``accelerator``, ``device=None``, ``unwrap_after_train``,
      ``callbacks__print_log__sink`` (as in ``AccelerateMixin``) and
      ``sync_batchnorm``.
    - ``initialize``: refuses settings that cannot work, before anything is
      built (every check in ``_check_parallel_params``, which
      :class:`~projkd.parallel.AcceleratedProjectorDistiller` also runs
      before it fits a teacher), then skorch's, then prepares the modules.
    - ``initialize_module``: skorch's, with no module prepared yet.
    - ``initialize_callbacks``: the print sink is the accelerator's ``print``
      (silent with ``verbose=0``).
    - ``on_train_begin``: prepares the modules again (``warm_start``,
      ``partial_fit``) and agrees on one shuffling seed.
    - ``train_step``: skorch's step inside ``accelerator.accumulate`` of every
      prepared module; ``train_step_single``: forward pass and loss under
      ``accelerator.autocast``, ``accelerator.backward``; ``_step_optimizer``:
      a plain ``optimizer.step()`` (the accelerator's optimizer skips steps
      while accumulating, so a closure would never run, and its fp16 gradient
      scaler takes none).
    - ``get_iterator``: this process's shard of the training batches (arrays:
      :meth:`training_batches`, a projkd hook; a ``DataLoader``: prepared by
      the accelerator); everything else, validation included, whole and on
      the device.
    - ``on_epoch_end``: gathers the training-batch records of every process.
    - ``on_train_end``: the main process's buffers to every replica, then
      skorch's, then the bare networks back (``unwrap_after_train``).
    - ``evaluation_step``: the bare networks on the whole data, nothing
      gathered; ``save_params``: the bare networks' state, from the main
      process only; ``load_params``: into the bare networks (a net not yet
      initialised is initialised first for a ``checkpoint``, as skorch does).
    - ``_compute_device`` (projkd's hook): the accelerator's device.

    Parameters
    ----------
    *args, **kwargs
        As for the net class.
    accelerator : accelerate.Accelerator
        Decides devices, precision and the processes to train on (required;
        checked when training starts, as scikit-learn checks parameters).
    device : None, default=None
        Leave it None: the accelerator places the networks and the data.
    unwrap_after_train : bool, default=True
        Put the bare networks back after training (needed to pickle).
    callbacks__print_log__sink : "auto" or callable, default="auto"
        "auto": the accelerator's ``print`` (the main process prints), or
        nothing with ``verbose=0``.
    sync_batchnorm : bool, default=False
        With several processes, turn the trained networks' BatchNorm layers
        into :class:`torch.nn.SyncBatchNorm`, so that batch statistics are
        those of the global batch. torch supports it on GPUs only.

    Examples
    --------
    >>> import torch
    >>> from accelerate import Accelerator
    >>> from skorch import NeuralNetClassifier
    >>> from projkd.parallel import DataParallelMixin
    >>> class Net(DataParallelMixin, NeuralNetClassifier):
    ...     pass
    >>> net = Net(torch.nn.Linear(4, 3), criterion=torch.nn.CrossEntropyLoss,
    ...           accelerator=Accelerator(cpu=True), train_split=None,
    ...           max_epochs=1, verbose=0)
    >>> net.fit(torch.randn(12, 4), torch.arange(12) % 3).history[-1, "epoch"]
    1
    """

    _prepared_modules_: dict[str, tuple[nn.Module, nn.Module]]
    _shared_seed_: int | None
    callbacks__print_log__sink: Any
    device: Any

    def __init__(
        self,
        *args: Any,
        accelerator: Any = None,
        device: Any = None,
        unwrap_after_train: bool = True,
        callbacks__print_log__sink: Any = "auto",
        sync_batchnorm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args,
            device=device,
            callbacks__print_log__sink=callbacks__print_log__sink,
            **kwargs,
        )
        self.accelerator = accelerator
        self.unwrap_after_train = unwrap_after_train
        self.sync_batchnorm = sync_batchnorm

    def _compute_device(self) -> Any:
        return self.accelerator.device

    def _feature_layer(self, name: str) -> str | None:
        """The layer whose output is the features of module ``name`` (None:
        the network's own ``forward_features`` or last layer)."""
        return None

    def _hint_layers(self, name: str) -> tuple[str, ...]:
        """The hint layers whose maps module ``name``'s forward returns."""
        return ()

    def _check_parallel_params(self) -> None:
        """Refuse settings that cannot work data-parallel: every check of
        the mixin's, run before anything is built."""
        if self.accelerator is None or isinstance(self.accelerator, type):
            given = (
                ""
                if self.accelerator is None
                else f"accelerator={self.accelerator.__name__} is a class; "
            )
            raise InputError(
                f"{given}{type(self).__name__} needs accelerator=accelerate."
                "Accelerator() (an instance); pass Accelerator(cpu=True) to train "
                "in CPU processes."
            )
        for name in ("mixed_precision", "compile"):
            value = getattr(self, name, None)
            engine = (
                f"Accelerator(mixed_precision={value!r})"
                if name == "mixed_precision"
                else 'Accelerator(dynamo_backend="inductor")'
            )
            if value not in (None, False):
                raise InputError(
                    f"{type(self).__name__}(..., {name}={value!r}): with an "
                    f"accelerator, set this on it instead, e.g. {engine}, and leave "
                    f"{name} at its default. The accelerator then applies it to the "
                    "DDP-wrapped networks of every process."
                )
        accelerator = self.accelerator
        if accelerator.device_placement and self.device is not None:
            raise InputError(
                f"device={self.device!r}: when device placement is performed by "
                "the accelerator, set device=None."
            )
        if accelerator.num_processes <= 1:
            return
        if self.sync_batchnorm and accelerator.device.type == "cpu":
            raise InputError(
                "sync_batchnorm=True needs GPUs: torch's SyncBatchNorm refuses CPU "
                "tensors. Use sync_batchnorm=False (each process then normalises "
                "with its own shard's statistics)."
            )
        if getattr(self, "nonfinite_loss", None) == "skip":
            raise InputError(
                "nonfinite_loss='skip' cannot work with several processes: a batch "
                "skipped on one process leaves the others waiting for its "
                "gradients. Use nonfinite_loss='raise'."
            )

    # ------------------------------------------------------ initialisation
    def initialize(self) -> DataParallelMixin:
        self._check_parallel_params()
        super().initialize()
        self._initialize_accelerator()
        return self

    def initialize_module(self) -> DataParallelMixin:
        super().initialize_module()
        self._prepared_modules_ = {}  # name: (DDP-wrapped, bare), once trained
        self._shared_seed_ = None
        return self

    def initialize_callbacks(self) -> DataParallelMixin:
        if self.callbacks__print_log__sink == "auto":
            # skorch's print sink prints even with verbose=0; keep it quiet
            sink = self.accelerator.print if self.verbose else _silent
            self.callbacks__print_log__sink = sink
        super().initialize_callbacks()
        return self

    def _initialize_accelerator(self) -> DataParallelMixin:
        """Prepare the modules that train; move the others to the device.

        DDP refuses modules without trainable parameters, and a criterion or
        an identity has no gradients to synchronise. Each trainable module
        is wrapped in :class:`~projkd.parallel.FeatureModule` first, so
        that a student's features come out of DDP's own forward pass.
        Idempotent: modules already prepared are left alone.
        """
        from accelerate.optimizer import AcceleratedOptimizer

        accelerator, prepared = self.accelerator, self._prepared_modules_
        for name in self._criteria:
            criterion = getattr(self, name + "_")
            if isinstance(criterion, nn.Module):
                setattr(self, name + "_", criterion.to(accelerator.device))
        for name in self._modules:
            module = getattr(self, name + "_")
            if not isinstance(module, nn.Module) or (
                name in prepared and prepared[name][0] is module
            ):
                continue
            if not _trainable(module):
                setattr(self, name + "_", module.to(accelerator.device))
                continue
            if self.sync_batchnorm and accelerator.num_processes > 1:
                # shares the parameters (the optimizer's) and the buffers
                module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            layer = self._feature_layer(name)
            hints = self._hint_layers(name)
            wrapped = accelerator.prepare(FeatureModule(module, layer, hints))
            prepared[name] = (wrapped, module)
            setattr(self, name + "_", wrapped)
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if isinstance(optimizer, torch.optim.Optimizer) and not isinstance(
                optimizer, AcceleratedOptimizer
            ):
                setattr(self, name + "_", accelerator.prepare(optimizer))
        return self

    def _unwrap_accelerator(self) -> None:
        """Put the bare networks back (DDP, compilation and wrappers gone).

        The accelerator's references to what it prepared (wrappers,
        optimizers, data loaders) are released too, so that an accelerator
        shared by many fits (``projkd reproduce``) does not keep every
        finished run's networks, gradients and optimizer state alive.
        """
        for name, (wrapped, bare) in self._prepared_modules_.items():
            if getattr(self, name + "_", None) is wrapped:
                self.accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
                setattr(self, name + "_", bare)
        self._prepared_modules_.clear()
        self.accelerator.free_memory()

    @contextmanager
    def _bare_modules(self) -> Iterator[None]:
        """The bare networks in place of the prepared ones, for a while."""
        prepared = dict(self._prepared_modules_) if self.initialized_ else {}
        current = {name: getattr(self, name + "_") for name in prepared}
        try:
            for name, (wrapped, bare) in prepared.items():
                if current[name] is wrapped:
                    setattr(self, name + "_", bare)
            yield
        finally:
            for name, module in current.items():
                setattr(self, name + "_", module)

    # ------------------------------------------------------------- training
    def on_train_begin(self, net: Any, X: Any = None, y: Any = None, **kwargs: Any):
        # a later fit (warm_start, partial_fit) trains prepared modules again
        self._initialize_accelerator()
        seed = None
        if self.accelerator.num_processes > 1 and not isinstance(
            getattr(self, "random_state", None), Integral
        ):
            # one shuffled order for all processes, even without random_state
            seed = broadcast_object(int(torch.randint(2**31 - 1, ()).item()))
        self._shared_seed_ = seed
        return super().on_train_begin(net, X=X, y=y, **kwargs)

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        # gradient accumulation must skip the sync of every prepared module
        prepared = [wrapped for wrapped, _ in self._prepared_modules_.values()]
        with self.accelerator.accumulate(*prepared):
            return super().train_step(batch, **fit_params)

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        with self.accelerator.autocast():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.accelerator.backward(loss)
        return {"loss": loss, "y_pred": y_pred}

    def agree_nonfinite(self, bad: Tensor) -> Tensor:
        """Whether any process's loss is not finite this step (an all-reduce
        on the device, no host read), so that every process skips or stops
        at the same step (:mod:`projkd.training.finite`)."""
        if self.accelerator.num_processes <= 1:
            return bad
        flag = bad.to(torch.float32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return flag > 0

    def _zero_grad_optimizer(self, set_to_none: Any = None) -> None:
        """Nothing: the gradients are zeroed after each optimizer step
        instead (:meth:`_step_optimizer`).

        skorch zeroes them at the start of each step, and an accelerator's
        optimizer zeroes only on the step that synchronises, i.e. the last
        micro-batch of an accumulation: there, it would wipe the gradients
        of every earlier micro-batch just before the last backward.
        Accelerate's own loop -- backward, step, zero -- keeps them.
        """

    def _step_optimizer(self, step_fn: Any) -> None:
        # no closure: see the class docstring; gradients zeroed after the
        # step (a no-op while accumulating), see _zero_grad_optimizer
        step_fn()
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            optimizer.step()
            optimizer.zero_grad()

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        """Training batches: this process's shard; otherwise the whole data.

        Arrays keep projkd's sliced batches (and the teacher cache) and are
        sharded by :meth:`training_batches`, before any prefetching to the
        device; any other training data go through skorch's ``DataLoader``,
        which the accelerator shards.
        """
        iterator = super().get_iterator(dataset, training=training)
        if isinstance(iterator, Prefetcher):  # of a shard; it moves them
            return iterator
        if training and isinstance(iterator, DataLoader):
            return self.accelerator.prepare(iterator)
        return OnDevice(iterator, self.accelerator.device)

    def training_batches(self, batches: ArrayBatches) -> ShardedArrayBatches:
        """This process's part of every global batch of ``batches``.

        Every process shuffles alike (``random_state``, or the seed the main
        process broadcast at the start of training) and takes its slice.
        """
        if batches.seed is None:
            batches.seed = self._shared_seed_
        self._own_random_stream()
        return ShardedArrayBatches(
            batches,
            num_replicas=self.accelerator.num_processes,
            rank=self.accelerator.process_index,
        )

    def _own_random_stream(self) -> None:
        """Give this process its own random stream for the epoch's training.

        Every process draws the same seed (``random_state``), so without this
        each process would draw the same augmentation and dropout for its
        slice as every other process does for its own: sample ``j`` of each
        slice would get the same crop and flip. The stream is reseeded from
        one draw of the current one plus the rank, so it stays reproducible.
        (:class:`~projkd.lockstep.EpochSeed`, which reseeds at each epoch's
        start, seeds from the rank as well.) Array batches only: their order
        comes from their own seed, whereas a sharded ``DataLoader``'s sampler
        takes torch's seed when it is prepared.
        """
        ranks = self.accelerator.num_processes
        if ranks > 1:
            base = int(torch.randint(2**40, (), dtype=torch.int64).item())
            torch.manual_seed(base * ranks + self.accelerator.process_index)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        """Gather the training batches of every process into the history, so
        that the epoch's losses and accuracies are over all samples."""
        if self.accelerator.num_processes > 1:
            epoch = self.history[-1]
            batches = epoch["batches"]
            train = [batch for batch in batches if "train_loss" in batch]
            rest = [batch for batch in batches if "train_loss" not in batch]
            gathered = all_gather_objects(train)
            merged = [
                batch
                for step in zip_longest(*gathered)
                for batch in step
                if batch is not None
            ]
            epoch["batches"] = merged + rest
        super().on_epoch_end(net, **kwargs)

    def on_train_end(self, net: Any, X: Any = None, y: Any = None, **kwargs: Any):
        # leave every replica identical: the main process's buffers (BatchNorm
        # statistics), as DDP's next forward pass would have done
        for _, bare in self._prepared_modules_.values():
            broadcast_buffers(bare)
        self.accelerator.wait_for_everyone()
        super().on_train_end(net, X=X, y=y, **kwargs)
        if self.unwrap_after_train:
            self._unwrap_accelerator()
        return self

    # ----------------------------------------------------------- prediction
    def evaluation_step(self, batch: Any, training: bool = False) -> Tensor:
        """The network's output, from the bare network; every process runs the
        whole data, so nothing is gathered."""
        self.check_is_fitted()
        with self._bare_modules():
            return super().evaluation_step(batch, training)

    # ---------------------------------------------------------- persistence
    def save_params(self, **kwargs: Any) -> None:
        """Save the bare networks' state, from the main process only."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with self._bare_modules():
                super().save_params(**kwargs)
        self.accelerator.wait_for_everyone()  # nobody reads a half-written file

    def load_params(self, **kwargs: Any) -> None:
        """Load into the bare networks (the prepared ones share their tensors)."""
        self.accelerator.wait_for_everyone()
        if kwargs.get("checkpoint") is not None and not self.initialized_:
            self.initialize()  # as skorch would, but before the bare swap
        device = self.device
        if device is None:  # map_location; load_state_dict copies in place
            self.device = "cpu"
        try:
            with self._bare_modules():
                super().load_params(**kwargs)
        finally:
            self.device = device


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print sink that prints nothing."""
