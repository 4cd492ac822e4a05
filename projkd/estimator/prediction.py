"""What a fitted distiller predicts: the student alone (a skorch mixin)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.dataset import unpack_data
from skorch.utils import to_numpy, to_tensor

from ..features import logits_of
from ..training.precision import autocast
from .validation import check_input, check_input_shape

__all__ = ["PredictionMixin"]


class PredictionMixin:
    """Prediction, probabilities and features of a fitted distiller.

    Prediction never runs the teacher, the projectors or the augmentation:
    ``predict``, ``predict_proba``, ``score`` and ``forward`` go through
    skorch's ``evaluation_step`` and the distiller's ``infer`` outside a
    training step, the student alone; ``transform``/``transform_teacher``/
    ``predict_proba_teacher`` read one network's features or probabilities,
    with the same precision and memory format. The host is a skorch net
    with ``module_``, ``teacher_``, ``classes_`` and the distiller's
    parameters.
    """

    # provided by the host estimator
    device: Any
    mixed_precision: str | None
    module_: Any
    teacher_: Any
    teacher_layer: str | None
    student_layer: str | None
    classes_: Any
    check_is_fitted: Any
    fit: Any
    get_iterator: Any
    get_dataset: Any
    _set_training: Any
    _as_input: Any
    _forward_of: Any
    _student_forward: Any
    hint_names: Any

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the student, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        proba : ndarray of shape (N, n_classes)
        """
        return super().predict_proba(  # type: ignore[misc]
            self._check_predict_input(X)
        )

    def predict(self, X: Any) -> np.ndarray:
        """The student's predicted labels (values of ``classes_``), an array
        of shape ``(N,)``, for inputs ``X`` as :meth:`predict_proba` takes."""
        proba = self.predict_proba(X)  # raises NotInitializedError before fit
        return np.asarray(self.classes_)[proba.argmax(axis=1)]

    def transform(self, X: Any) -> np.ndarray:
        """The student's penultimate features.

        Parameters
        ----------
        X : array-like, torch.Tensor or Dataset

        Returns
        -------
        features : ndarray of shape (N, D)
            ``D`` is ``n_student_features_``.
        """
        return self._features(X, teacher=False)

    def transform_teacher(self, X: Any) -> np.ndarray:
        """The teacher's penultimate features, ``(N, n_teacher_features_)``, as
        :meth:`transform` gives the student's (e.g. for CKA between them)."""
        return self._features(X, teacher=True)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then return the student's penultimate features of ``X``."""
        return self.fit(X, y, **fit_params).transform(X)

    def _check_predict_input(self, X: Any) -> Any:
        """skorch's NotInitializedError (a scikit-learn NotFittedError) before
        fit; then ``X`` checked against the samples seen by ``fit``."""
        self.check_is_fitted()
        X = check_input(X, step="predict")
        check_input_shape(X, getattr(self, "input_shape_", None), type(self).__name__)
        return X

    def predict_proba_teacher(self, X: Any) -> np.ndarray:
        """The teacher's class probabilities, ``(N, n_classes)``, as
        :meth:`predict_proba` gives the student's (e.g. to compare their
        calibration)."""
        return self._features(X, teacher=True, logits=True)

    def _features(self, X: Any, *, teacher: bool, logits: bool = False) -> np.ndarray:
        """One network's features (or softmax probabilities) of ``X``, batch
        by batch, in eval mode, under ``mixed_precision`` and in the memory
        format of training."""
        X = self._check_predict_input(X)
        self._set_training(False)
        iterator = self.get_iterator(self.get_dataset(X), training=False)
        chunks = []
        with torch.no_grad():
            for batch in iterator:
                Xi, _ = unpack_data(batch)
                x = self._as_input(to_tensor(Xi, device=self.device))
                with autocast(self.device, self.mixed_precision):
                    if teacher:
                        output, features, _ = self._forward_of(
                            "_teacher_forward_fn",
                            self.teacher_,
                            self.teacher_layer,
                            hints=self.hint_names("teacher"),
                        )(x)
                    else:
                        output, features, _ = self._student_forward(x)
                chunk = (
                    torch.softmax(logits_of(output).float(), dim=-1)
                    if logits
                    else features.float()
                )
                chunks.append(to_numpy(chunk))
        return np.concatenate(chunks)
