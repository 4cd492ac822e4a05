"""Penultimate features of arbitrary networks.

Distillation compares the student's and the teacher's *penultimate* features:
the vector a network's classifier sees. :func:`forward_with_features` returns
it together with the logits from a single forward pass, found in this order:

1. ``layer`` names a submodule: its output, average-pooled over any spatial
   dimensions (``(N, C, H, W) -> (N, C)``).
2. The network has ``forward_features(x)`` and ``forward_head(f)`` (timm's
   convention, followed by :mod:`projkd.models`): ``forward_head`` of the
   trunk's output ``f`` is the logits. When ``forward_head`` takes a
   ``pre_logits`` argument (a raw timm model, whose ``forward_features``
   returns unpooled ``(N, C, H, W)`` maps or ``(N, L, D)`` tokens),
   ``forward_head(f, pre_logits=True)`` is the feature: timm's own pooling
   (class token, token average, attention pool, ``conv_head``; the head
   runs twice, for the features and for the logits). Otherwise
   ``f`` is the feature, average-pooled over any spatial dimensions; a 3-D
   ``f`` is refused (:class:`FeatureError`), as it may be tokens
   ``(N, L, D)`` or channels ``(N, C, L)``: name the feature layer.
3. Otherwise the input of the network's last :class:`torch.nn.Linear`, caught
   by a forward hook that lives only for the duration of the call. This covers
   torchvision's classifiers, the CIFAR zoo and plain MLPs.

The hook is temporary on purpose: left on the user's object, it would carry
projkd's state into it (and keep an activation alive between calls).
:class:`FeatureReader` is the one implementation of these rules: it
resolves the source once and reads it eagerly, with a temporary hook, with
a tap left on the layer for good, or inside a compiled function
(:class:`projkd.training.compiling.FeatureForward`).

Networks need not return a bare tensor: :func:`logits_of` takes the logits
from any of the output types listed there (Hugging Face ``transformers``
models return an ``ImageClassifierOutput`` with ``.logits``), and every
place that reads a network's output goes through it. A named layer may
return a tuple or a ``ModelOutput`` too: its first tensor is the feature
(``last_hidden_state`` for a Hugging Face model), and the token sequences
``(N, L, D)`` of a Hugging Face transformer are averaged over the tokens.
"""

from .probe import (
    declared_map_widths,
    declared_widths,
    feature_width,
    first_inputs,
    probe,
    probe_maps,
)
from .reader import (
    ACCEPTED_OUTPUTS,
    FeatureError,
    FeatureReader,
    LayerTap,
    UnsupportedOutputError,
    forward_with_features,
    has_feature_api,
    layer_activation,
    logits_of,
    named_module,
    resolve_feature_layer,
)

__all__ = [
    "ACCEPTED_OUTPUTS",
    "FeatureError",
    "FeatureReader",
    "LayerTap",
    "UnsupportedOutputError",
    "declared_map_widths",
    "declared_widths",
    "feature_width",
    "first_inputs",
    "forward_with_features",
    "has_feature_api",
    "layer_activation",
    "logits_of",
    "named_module",
    "probe",
    "probe_maps",
    "resolve_feature_layer",
]
