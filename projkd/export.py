"""Ship the student: export a fitted distiller's student for deployment.

Only the student leaves: the teacher and the projectors stay behind (they
serve training only). Formats:

- ``"state_dict"``: the weights (``torch.save(state_dict)``) and a JSON
  sidecar (same name, ``.json``) naming the architecture when the student
  came from :func:`projkd.models.get_model`, so that
  ``get_model(arch, num_classes=..., weights=path)`` (or :func:`load_student`)
  rebuilds it; the sidecar also lists ``classes`` (what output ``i`` means).
- ``"torchscript"``: a traced :class:`torch.jit.ScriptModule`
  (``torch.jit.load``).
- ``"torch.export"``: an :class:`torch.export.ExportedProgram` saved with
  :func:`torch.export.save` (``torch.export.load(path).module()``), batch size
  dynamic.
- ``"onnx"``: an ONNX graph for onnxruntime and friends, batch size dynamic
  (the ``onnx`` extra: ``pip install 'projkd[onnx]'``).

The exported network outputs logits (``output="logits"``) or class
probabilities equal to ``est.predict_proba`` (``output="proba"``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import InputError
from .models._registry import SPEC_ATTRIBUTE, get_model

__all__ = ["FORMATS", "export_student", "load_student"]

FORMATS = ("state_dict", "torchscript", "torch.export", "onnx")
_OUTPUTS = ("logits", "proba")


class _WithSoftmax(nn.Module):
    """The student followed by a softmax: outputs equal ``predict_proba``."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.student(x), dim=-1)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _example_input(est: Any, example_input: Any) -> Tensor:
    if example_input is None:
        shape = getattr(est, "input_shape_", None)
        sample = getattr(est, "_sample_input_", None)
        if shape is None and isinstance(sample, Tensor):
            shape = tuple(sample.shape[1:])
        if shape is None:
            raise InputError(
                "export_student needs an example input: the estimator was fitted "
                "on a Dataset, so pass example_input=<a batch of inputs>."
            )
        return torch.zeros((2, *shape))
    x = torch.as_tensor(
        np.asarray(example_input)
        if not isinstance(example_input, Tensor)
        else example_input
    )
    return x.detach().to("cpu", torch.float32)


def _state_of(student: nn.Module) -> dict[str, Tensor]:
    from .models import TimmModel

    # timm students are saved in timm's own layout, which get_model("timm:...")
    # and timm.create_model read.
    module = student.model if isinstance(student, TimmModel) else student
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def export_student(
    est: Any,
    path: str | Path,
    format: str = "state_dict",  # noqa: A002 - the word users know
    *,
    output: str = "logits",
    example_input: Any = None,
) -> Path:
    """Export the student of a fitted distiller (never the teacher or projectors).

    Parameters
    ----------
    est : fitted ProjectorDistiller
        Its ``module_`` is exported: copied to the CPU in eval mode, so the
        estimator itself is left as it was.
    path : str or Path
        The file to write (``.pt``, ``.ts``, ``.pt2``, ``.onnx`` by
        convention). For ``"state_dict"`` a ``.json`` sidecar is written
        beside it.
    format : {"state_dict", "torchscript", "torch.export", "onnx"}, \
default="state_dict"
    output : {"logits", "proba"}, default="logits"
        What the traced/exported graph returns; ``"proba"`` appends the
        softmax of ``predict_proba``. Ignored for ``"state_dict"``.
    example_input : array-like, tensor or None, default=None
        A batch of inputs to trace with; ``None`` uses zeros of the input
        shape seen by ``fit``.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        For an unknown ``format`` or ``output``, or an estimator that is not
        fitted.
    ImportError
        For ``"onnx"`` without onnx and onnxscript installed.

    Examples
    --------
    >>> # export_student(est, "student.pt")              # + student.json
    >>> # export_student(est, "student.onnx", "onnx", output="proba")
    """
    if format not in FORMATS:
        raise InputError(
            f"format must be one of {', '.join(map(repr, FORMATS))}; got {format!r}."
        )
    if output not in _OUTPUTS:
        raise InputError(
            f"output must be one of {', '.join(map(repr, _OUTPUTS))}; got {output!r}."
        )
    student = getattr(est, "module_", None)
    if not isinstance(student, nn.Module):
        raise InputError(
            f"export_student needs a fitted distiller; {type(est).__name__} has no "
            "module_. Call fit first."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    student = copy.deepcopy(student).cpu().eval().requires_grad_(False)
    if format == "state_dict":
        torch.save(_state_of(student), path)
        _sidecar(path).write_text(json.dumps(_metadata(est, student), indent=2))
        return path
    module = _WithSoftmax(student).eval() if output == "proba" else student
    x = _example_input(est, example_input)
    if format == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(module, x)
        torch.jit.save(traced, str(path))
    elif format == "torch.export":
        program = torch.export.export(
            module, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
        )
        torch.export.save(program, path)
    else:
        _export_onnx(module, x, path)
    return path


def _export_onnx(module: nn.Module, x: Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "format='onnx' needs onnx and onnxscript: pip install 'projkd[onnx]'."
        ) from error
    torch.onnx.export(
        module,
        (x,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim.AUTO},),
        external_data=False,
        verbose=False,
    )


def _metadata(est: Any, student: nn.Module) -> dict[str, Any]:
    spec = dict(getattr(student, SPEC_ATTRIBUTE, None) or {})
    classes = np.asarray(getattr(est, "classes_", [])).tolist()
    meta: dict[str, Any] = {
        "format": "state_dict",
        "arch": spec.get("name"),
        "num_classes": spec.get("num_classes"),
        "kwargs": spec.get("kwargs", {}),
        "module": f"{type(student).__module__}.{type(student).__qualname__}",
        "input_shape": list(getattr(est, "input_shape_", None) or []) or None,
        "classes": classes if _jsonable(classes) else None,
    }
    if not _jsonable(meta["kwargs"]):
        meta["kwargs"] = None
    return meta


def load_student(path: str | Path, **kwargs: Any) -> nn.Module:
    """Rebuild a student written by ``export_student(est, path, "state_dict")``.

    Reads the ``.json`` sidecar for the architecture and calls
    ``get_model(arch, num_classes=..., weights=path, **kwargs)``.

    Parameters
    ----------
    path : str or Path
    **kwargs
        Override or complete the architecture arguments of the sidecar.

    Returns
    -------
    student : torch.nn.Module
        In eval mode.

    Raises
    ------
    ValueError
        If the sidecar is missing or names no registry architecture (the
        student was not built with :func:`projkd.models.get_model`); then
        build the network yourself and use
        :func:`projkd.models.load_weights`.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise InputError(
            f"No sidecar {str(sidecar)!r} beside {str(path)!r}; build the network "
            "yourself and load the weights with projkd.models.load_weights."
        )
    meta = json.loads(sidecar.read_text())
    if not meta.get("arch"):
        raise InputError(
            f"{str(sidecar)!r} names no registry architecture (the student was a "
            f"{meta.get('module')}); build it yourself and load the weights with "
            "projkd.models.load_weights(model, path)."
        )
    arguments = {**(meta.get("kwargs") or {}), **kwargs}
    model = get_model(
        meta["arch"], num_classes=meta.get("num_classes"), weights=path, **arguments
    )
    return model.eval()
