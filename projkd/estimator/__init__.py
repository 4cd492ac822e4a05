"""The parts of :class:`~projkd.ProjectorDistiller`, one skorch mixin or
concern per module.

- :mod:`.validation`: the checks run before any training, and the
  parameters' constraints.
- :mod:`.params`: the distiller's own parameters in ``get_params`` and
  ``set_params``, and what a changed one re-initialises.
- :mod:`.networks`: the student, the frozen teacher and the projectors.
- :mod:`.data`: arrays into batches, labels encoded, the teacher cache.
- :mod:`.labels`: the classes of a fit and their encoding.
- :mod:`.prediction`: prediction and features, the student alone.

The distillation step itself lives in :mod:`projkd.training`.
"""
