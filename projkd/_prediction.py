"""What a fitted distiller predicts: the student alone (a skorch mixin)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import unpack_data
from skorch.utils import to_numpy, to_tensor
from torch import Tensor

from ._validation import check_input, check_input_shape
from .features import forward_with_features, logits_of
from .training.precision import autocast

__all__ = ["PredictionMixin"]


def _softmax(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=-1)


class PredictionMixin:
    """Prediction, probabilities and features of a fitted distiller.

    Prediction never runs the teacher, the projectors or the augmentation:
    ``predict``, ``predict_proba`` and ``score`` are the student's, and
    ``transform``/``transform_teacher``/``predict_proba_teacher`` read one
    network's features or probabilities. The host is a skorch net with
    ``module_``, ``teacher_``, ``classes_`` and the distiller's parameters.
    """

    # provided by the host estimator
    device: Any
    mixed_precision: str | None
    predict_nonlinearity: Any
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

    def evaluation_step(self, batch: Any, training: bool = False) -> Tensor:
        """The student's logits alone: prediction never runs the teacher."""
        self.check_is_fitted()
        Xi, _ = unpack_data(batch)
        with (
            torch.set_grad_enabled(training),
            autocast(self.device, self.mixed_precision),
        ):
            self._set_training(training)
            output = self.module_(self._as_input(to_tensor(Xi, device=self.device)))
            logits = logits_of(output, network="student")
        return logits.float()

    def _get_predict_nonlinearity(self) -> Any:
        if self.predict_nonlinearity == "auto":
            self.check_is_fitted()
            return _softmax
        return super()._get_predict_nonlinearity()  # type: ignore[misc]

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
        proba = self.predict_proba(X)  # raises NotFittedError before fit
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
        """scikit-learn's NotFittedError before fit; then ``X`` checked against
        the samples seen by ``fit``."""
        check_is_fitted(self)
        X = check_input(X, step="predict")
        check_input_shape(X, getattr(self, "input_shape_", None), type(self).__name__)
        return X

    def predict_proba_teacher(self, X: Any) -> np.ndarray:
        """The teacher's class probabilities, ``(N, n_classes)``, as
        :meth:`predict_proba` gives the student's (e.g. to compare their
        calibration)."""
        return self._features(X, teacher=True, logits=True)

    def _features(self, X: Any, *, teacher: bool, logits: bool = False) -> np.ndarray:
        X = self._check_predict_input(X)
        model = self.teacher_ if teacher else self.module_
        layer = self.teacher_layer if teacher else self.student_layer
        self._set_training(False)
        iterator = self.get_iterator(self.get_dataset(X), training=False)
        chunks = []
        with torch.no_grad():
            for batch in iterator:
                Xi, _ = unpack_data(batch)
                outputs = forward_with_features(
                    model, to_tensor(Xi, device=self.device), layer=layer
                )
                chunk = _softmax(outputs[0]) if logits else outputs[1]
                chunks.append(to_numpy(chunk))
        return np.concatenate(chunks)
