"""skorch nets trained data-parallel through Hugging Face Accelerate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import zip_longest
from numbers import Integral
from typing import Any

import torch
from skorch.hf import AccelerateMixin
from torch import Tensor, nn

from ..features import forward_with_features
from ..training.batching import ArrayBatches
from .process import all_gather_objects, broadcast_buffers, broadcast_object
from .sharding import OnDevice, ShardedArrayBatches

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
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: Tensor, features: bool = False) -> Any:
        """``model(x)``, or ``(logits, features)`` with ``features=True``."""
        if features:
            return forward_with_features(self.model, x, layer=self.layer)
        return self.model(x)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class DataParallelMixin(AccelerateMixin):
    """skorch's :class:`~skorch.hf.AccelerateMixin`, made to train correctly in
    several processes.

    Mix it in before a skorch net class (``class Net(DataParallelMixin,
    NeuralNetClassifier)``). Only modules with trainable parameters are
    wrapped in DDP; the others and the criteria are moved to the device.
    Training batches of arrays (:class:`~projkd.training.batching.ArrayBatches`)
    are sharded per process with one shuffled order for all; a ``Dataset``
    goes through Accelerate's sharded ``DataLoader``. The history's training
    records are gathered across processes at each epoch's end; evaluation runs
    the whole data on every process with the bare networks; only the main
    process saves.

    Parameters
    ----------
    *args, **kwargs
        As for the net class and :class:`~skorch.hf.AccelerateMixin`
        (``accelerator`` is required; leave ``device=None``).
    sync_batchnorm : bool, default=False
        With several processes, turn the trained networks' BatchNorm layers
        into :class:`torch.nn.SyncBatchNorm`, so that batch statistics are
        those of the global batch. torch supports it on GPUs only.
    """

    def __init__(self, *args: Any, sync_batchnorm: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_batchnorm = sync_batchnorm

    def _compute_device(self) -> Any:
        return self.accelerator.device

    def _feature_layer(self, name: str) -> str | None:
        """The layer whose output is the features of module ``name`` (None:
        the network's own ``forward_features`` or last layer)."""
        return None

    def _check_accelerated_params(self) -> None:
        """Refuse settings that belong to the accelerator, before training."""
        for name in ("mixed_precision", "compile"):
            value = getattr(self, name, None)
            engine = (
                f"Accelerator(mixed_precision={value!r})"
                if name == "mixed_precision"
                else 'Accelerator(dynamo_backend="inductor")'
            )
            if value not in (None, False):
                raise ValueError(
                    f"{type(self).__name__}(..., {name}={value!r}): with an "
                    f"accelerator, set this on it instead, e.g. {engine}, and leave "
                    f"{name} at its default. The accelerator then applies it to the "
                    "DDP-wrapped networks of every process."
                )

    def initialize(self) -> Any:
        self._check_accelerated_params()
        return super().initialize()

    # ---------------------------------------------------------- preparation
    def _initialize_accelerator(self) -> DataParallelMixin:
        """Prepare the modules that train; move the others to the device.

        DDP refuses modules without trainable parameters, and a criterion or
        an identity has no gradients to synchronise. Each trainable module
        is wrapped in :class:`~projkd.parallel.FeatureModule` first, so
        that a student's features come out of DDP's own forward pass.
        Idempotent: modules already prepared are left alone.
        """
        accelerator = self.accelerator
        prepared: dict[str, tuple[nn.Module, nn.Module]]
        prepared = self.__dict__.setdefault("_prepared_modules_", {})
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
            wrapped = accelerator.prepare(FeatureModule(module, layer))
            prepared[name] = (wrapped, module)
            setattr(self, name + "_", wrapped)
        from accelerate.optimizer import AcceleratedOptimizer

        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if isinstance(optimizer, torch.optim.Optimizer) and not isinstance(
                optimizer, AcceleratedOptimizer
            ):
                setattr(self, name + "_", accelerator.prepare(optimizer))
        self._wrapped_with_accelerator = True
        return self

    def _unwrap_accelerator(self) -> None:
        """Put the bare networks back (DDP, compilation and wrappers gone).

        The accelerator's own references to this estimator's wrappers,
        optimizers and data loaders are dropped too, so that an accelerator
        shared by many fits (``projkd reproduce``) does not keep every
        finished run's networks, gradients and optimizer state alive.
        """
        prepared = self.__dict__.get("_prepared_modules_", {})
        for name, (wrapped, bare) in prepared.items():
            if getattr(self, name + "_", None) is wrapped:
                self.accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
                setattr(self, name + "_", bare)
        self._forget("_models", [wrapped for wrapped, _ in prepared.values()])
        self._forget("_optimizers", [getattr(self, n + "_") for n in self._optimizers])
        self._forget("_dataloaders", self.__dict__.pop("_prepared_loaders_", []))
        prepared.clear()
        self._wrapped_with_accelerator = False

    def _forget(self, attribute: str, objects: list[Any]) -> None:
        """Drop ``objects`` from the accelerator's list ``attribute``."""
        held = getattr(self.accelerator, attribute, None)
        if isinstance(held, list):
            held[:] = [item for item in held if not any(item is o for o in objects)]

    @contextmanager
    def _bare_modules(self) -> Iterator[None]:
        """The bare networks in place of the prepared ones, for a while."""
        prepared = dict(self.__dict__.get("_prepared_modules_", {}))
        current = {name: getattr(self, name + "_") for name in prepared}
        try:
            for name, (wrapped, bare) in prepared.items():
                if current[name] is wrapped:
                    setattr(self, name + "_", bare)
            yield
        finally:
            for name, module in current.items():
                setattr(self, name + "_", module)

    def _validate_params(self) -> None:
        super()._validate_params()
        if (
            self.sync_batchnorm
            and self.accelerator.num_processes > 1
            and self.accelerator.device.type == "cpu"
        ):
            raise ValueError(
                "sync_batchnorm=True needs GPUs: torch's SyncBatchNorm refuses CPU "
                "tensors. Use sync_batchnorm=False (each process then normalises "
                "with its own shard's statistics)."
            )

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
        prepared = [w for w, _ in self.__dict__.get("_prepared_modules_", {}).values()]
        with self.accelerator.accumulate(*prepared):
            return super(AccelerateMixin, self).train_step(batch, **fit_params)

    def get_iterator(self, dataset: Any, training: bool = False) -> Any:
        """Training batches: this process's shard; otherwise the whole data.

        Arrays keep projkd's sliced batches (and the teacher cache) and are
        sharded here; any other dataset goes through skorch's ``DataLoader``,
        which the accelerator shards for training.
        """
        iterator = super(AccelerateMixin, self).get_iterator(dataset, training)
        device = self.accelerator.device
        if isinstance(iterator, ArrayBatches):
            if iterator.seed is None:
                iterator.seed = getattr(self, "_shared_seed_", None)
            if training:
                iterator = ShardedArrayBatches(
                    iterator,
                    num_replicas=self.accelerator.num_processes,
                    rank=self.accelerator.process_index,
                )
                self._own_random_stream()
            return OnDevice(iterator, device)
        if training:  # one prepared loader per epoch: forget the last one
            self._forget("_dataloaders", self.__dict__.pop("_prepared_loaders_", []))
            loader = self.accelerator.prepare(iterator)
            self.__dict__["_prepared_loaders_"] = [loader]
            return loader
        return OnDevice(iterator, device)

    def _own_random_stream(self) -> None:
        """Give this process its own random stream for the epoch's training.

        Every process draws the same seed for the epoch (``random_state``,
        :class:`~projkd.lockstep.EpochSeed`), so without this each process
        would draw the same augmentation and dropout for its slice as every
        other process does for its own: sample ``j`` of each slice would get
        the same crop and flip. The stream is reseeded from one draw of the
        current one plus the rank, so it stays reproducible. (Array batches
        only: their order comes from their own seed, whereas a sharded
        ``DataLoader``'s sampler takes torch's seed when it is prepared.)
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
        for _, bare in self.__dict__.get("_prepared_modules_", {}).values():
            broadcast_buffers(bare)
        return super().on_train_end(net, X=X, y=y, **kwargs)

    # ----------------------------------------------------------- prediction
    def evaluation_step(self, batch: Any, training: bool = False) -> Tensor:
        """The network's output, from the bare network; every process runs the
        whole data, so nothing is gathered."""
        with self._bare_modules():
            return super(AccelerateMixin, self).evaluation_step(batch, training)

    # ---------------------------------------------------------- persistence
    def save_params(self, **kwargs: Any) -> None:
        """Save the bare networks' state, from the main process only."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with self._bare_modules():
                super(AccelerateMixin, self).save_params(**kwargs)
        self.accelerator.wait_for_everyone()  # nobody reads a half-written file

    def load_params(self, **kwargs: Any) -> None:
        """Load into the bare networks (the prepared ones share their tensors)."""
        self.accelerator.wait_for_everyone()
        device: Any = getattr(self, "device", None)
        if device is None:  # map_location; load_state_dict copies in place
            setattr(self, "device", "cpu")  # noqa: B010
        try:
            with self._bare_modules():
                super(AccelerateMixin, self).load_params(**kwargs)
        finally:
            setattr(self, "device", device)  # noqa: B010

    def _initialize_callbacks(self) -> DataParallelMixin:
        # skorch's "auto" sink prints even with verbose=0; keep verbose=0 quiet
        sink: Any = getattr(self, "callbacks__print_log__sink", None)
        if sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = _silent
        super()._initialize_callbacks()
        return self


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print sink that prints nothing."""
