"""timm's models as teachers and students (the ``timm`` extra)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._weights import load_weights

__all__ = ["TimmModel", "timm_model"]


class TimmModel(nn.Module):
    """A timm model with projkd's features interface.

    The features are timm's pooled pre-logits,
    ``model.forward_head(model.forward_features(x), pre_logits=True)``; the
    logits are the classifier (``model.get_classifier()``) applied to them,
    which is what timm's own ``forward`` computes.

    Parameters
    ----------
    model : torch.nn.Module
        A model built by :func:`timm.create_model`; kept as ``self.model``.

    Attributes
    ----------
    num_features : int
        Width of the pre-logits features.

    Examples
    --------
    >>> import torch
    >>> from projkd.models import get_model
    >>> net = get_model("timm:resnet10t", num_classes=10)
    >>> tuple(net.forward_features(torch.zeros(2, 3, 32, 32)).shape)
    (2, 512)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_features = int(getattr(model, "num_features"))  # noqa: B009

    def forward_features(self, x: Tensor) -> Tensor:
        """timm's pooled pre-logits features."""
        model: Any = self.model
        return model.forward_head(model.forward_features(x), pre_logits=True)

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits from pre-logits features (timm's classifier)."""
        model: Any = self.model
        head: nn.Module = model.get_classifier()
        return head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def timm_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> TimmModel:
    """Build ``timm.create_model(name, ...)`` wrapped in :class:`TimmModel`.

    Parameters
    ----------
    name : str
        Any name of :func:`timm.list_models`.
    num_classes : int or None, default=None
        ``None`` keeps timm's default (that of the pretrained weights).
    weights : str, path or None, default=None
        A checkpoint file in timm's own key layout (any layout
        :func:`~projkd.models.read_state_dict` reads).
    pretrained : bool, default=False
        Download timm's pretrained weights (needs a network connection).
    **kwargs
        Passed to :func:`timm.create_model` (e.g. ``drop_rate``, or
        ``embed_dim``/``depth`` for a small ViT).

    Returns
    -------
    model : TimmModel
    """
    try:
        import timm
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            f"'timm:{name}' needs timm: pip install 'projkd[timm]'."
        ) from error
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as error:
        if "Unknown model" not in str(error):
            raise
        raise ValueError(
            f"Unknown timm model {name!r}; see timm.list_models()."
        ) from error
    if weights is not None:
        load_weights(model, weights, arch=f"timm:{name}")
    return TimmModel(model)
