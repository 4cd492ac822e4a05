"""Many GPUs and nodes: data-parallel training through Hugging Face Accelerate.

- :mod:`.accelerated`: :class:`AcceleratedProjectorDistiller` and
  :func:`make_distiller`;
- :mod:`.mixin`: :class:`DataParallelMixin`, for any skorch net;
- :mod:`.sharding`: this process's part of each global batch;
- :mod:`.process`: the processes of a launch (rank, count, collectives).

Launch a script that fits one on 4 GPUs of one machine with
``torchrun --nproc_per_node 4 train.py`` or
``accelerate launch --num_processes 4 train.py``.
"""

from .accelerated import AcceleratedProjectorDistiller, make_distiller
from .mixin import DataParallelMixin, FeatureModule
from .process import is_main_process, launched_world_size, process_index, world_size
from .sharding import OnDevice, ShardedArrayBatches

__all__ = [
    "AcceleratedProjectorDistiller",
    "DataParallelMixin",
    "FeatureModule",
    "OnDevice",
    "ShardedArrayBatches",
    "is_main_process",
    "launched_world_size",
    "make_distiller",
    "process_index",
    "world_size",
]
