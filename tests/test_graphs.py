"""The training step as one compiled graph (``compile=True``): one graph per
batch shape, none after the first epoch, the eager fit's numbers. On the CPU
with a recording backend (no code generation); CUDA graphs skip without CUDA."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, LRScheduler
from torch import nn

from projkd import NonFiniteLossError, ProjectorDistiller
from projkd.losses import DKDLoss
from projkd.models import DigitsCNN
from projkd.training.finite import takes_found_inf

from .test_finite import Poison

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
EPOCHS = 4
# the recipe's optimizer and schedule (experiments.recipes), a milestone
# inside the fit; DKD warmed up over the first half, so kd_weight changes
RECIPE = dict(
    optimizer=torch.optim.SGD,
    optimizer__momentum=0.9,
    optimizer__weight_decay=5e-4,
    lr=0.05,
    kd_weight=1.0,
    batch_size=128,  # 300 samples: batches of 128, 128 and 44
    max_epochs=EPOCHS,
    train_split=None,
    verbose=0,
    random_state=0,
)


def milestone():
    return LRScheduler(torch.optim.lr_scheduler.MultiStepLR, milestones=[2])


class Recorder:
    """A public callable ``torch.compile`` backend keeping each graph it is
    given (a graph break would show as more graphs), run as traced."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


class GraphsPerEpoch(Callback):
    def __init__(self, recorder):
        self.recorder = recorder
        self.counts = []

    def on_epoch_end(self, net, **kwargs):
        self.counts.append(len(self.recorder.graphs))


class HookedNet(nn.Module):
    """A BatchNorm net without forward_features: its features come from a tap."""

    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make(teacher, student=DigitsCNN, **params):
    params = {**RECIPE, "logit_loss": DKDLoss(warmup=0.5), **params}
    return ProjectorDistiller(teacher, student, student__width=4, **params)


def _targets(gm):
    return {getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes}


def _batch_sizes(gm):
    """The sizes of the image batches (N, 1, 8, 8) the graph takes."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = [n.meta.get("example_value") for n in inputs]
    images = [v for v in values if isinstance(v, torch.Tensor) and v.ndim == 4]
    return {v.shape[0] for v in images if tuple(v.shape[1:]) == (1, 8, 8)}


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Each test's compilations counted from nothing."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


@pytest.fixture(scope="module", params=[DigitsCNN, HookedNet], ids=["api", "tap"])
def fits(request, small_digits):
    """A compiled fit with its graphs counted per epoch, and the eager fit."""
    torch.compiler.reset()
    teacher = DigitsCNN(width=8, n_features=32).eval()
    recorder = Recorder()
    counter = GraphsPerEpoch(recorder)
    compiled = make(
        teacher,
        request.param,
        compile=True,
        compile__backend=recorder,
        callbacks=[milestone(), counter],
    ).fit(*small_digits)
    eager = make(teacher, request.param, callbacks=[milestone()]).fit(*small_digits)
    return compiled, eager, recorder, counter.counts


def test_the_step_compiles_into_one_graph_per_batch_shape(fits):
    compiled, _, recorder, _ = fits
    assert len(recorder.graphs) == 2, [len(g.graph.nodes) for g in recorder.graphs]
    assert [_batch_sizes(g) for g in recorder.graphs] == [{128}, {44}]
    for gm in recorder.graphs:  # the forward, projectors, loss and records
        targets = _targets(gm)
        assert {"conv2d", "batch_norm", "linear", "cosine_similarity"} <= targets
        assert {"cross_entropy", "kl_div", "stack"} <= targets, targets
    assert compiled.uses_graph_step()


def test_no_graph_is_compiled_after_the_first_epoch(fits):
    """Neither the lr milestone (epoch 2), DKD's warm-up (kd_weight x 0.5
    then x 1) nor the last batch of each epoch recompiles."""
    compiled, _, _, counts = fits
    assert counts == [2] * EPOCHS
    lrs = [group["lr"] for group in compiled.optimizer_.param_groups]
    assert np.allclose(lrs, 0.005)  # the milestone was passed


def test_the_compiled_fit_equals_the_eager_fit(fits):
    compiled, eager, _, _ = fits
    names = ["train_loss", "train_ce", "train_kd", "train_tckd", "train_feat"]
    for name in names:
        np.testing.assert_allclose(
            compiled.history[:, name], eager.history[:, name], rtol=1e-6, err_msg=name
        )
    assert compiled.history[:, "train_acc"] == eager.history[:, "train_acc"]
    for module in ("module_", "projectors_"):
        mine = getattr(compiled, module).state_dict()
        theirs = getattr(eager, module).state_dict()
        assert len(mine) == len(theirs)
        for (key, value), other in zip(mine.items(), theirs.values(), strict=True):
            torch.testing.assert_close(value, other, rtol=1e-5, atol=1e-6, msg=key)


def test_the_compiled_fit_pickles_and_trains_on(fits, small_digits):
    compiled, _, _, _ = fits
    X, y = small_digits
    copy_ = pickle.loads(pickle.dumps(compiled))
    np.testing.assert_allclose(
        copy_.predict_proba(X[:20]), compiled.predict_proba(X[:20]), atol=1e-6
    )
    assert "_training_graph_fn" not in vars(copy_)  # rebuilt on first use
    copy_.set_params(max_epochs=1, callbacks=[]).partial_fit(X, y)
    assert np.isfinite(copy_.history[-1, "train_loss"])
    assert copy_.training_graph() is not compiled.training_graph()


def test_each_structure_compiles_past_torch_s_recompile_limit(small_digits):
    """Five structures (1-5 projectors) of two batch shapes are ten graphs,
    past torch's limit of 8 per code object: each structure traces its own
    code, so none trains eagerly; a sixth fit of a known structure (a new
    estimator) reuses its graphs."""
    teacher = DigitsCNN(width=8, n_features=32).eval()
    recorder = Recorder()
    counts = []
    for k in (1, 2, 3, 4, 5, 2):
        est = make(
            teacher,
            DigitsCNN,
            n_projectors=k,
            max_epochs=1,
            compile=True,
            compile__backend=recorder,
        )
        est.fit(*small_digits)
        counts.append(len(recorder.graphs))
    assert counts == [2, 4, 6, 8, 10, 10]


def test_the_step_reads_no_value_on_the_host(small_digits, teacher, monkeypatch):
    """After the first epoch, a compiled epoch reads nothing back per step."""
    reads = {"n": 0}

    class Count(Callback):
        def on_epoch_begin(self, net, **kwargs):
            reads["epoch"] = reads["n"]

        def on_epoch_end(self, net, **kwargs):
            reads.setdefault("per_epoch", []).append(reads["n"] - reads["epoch"])

    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    est = make(
        teacher, batch_size=25, compile=True, compile__backend=Recorder(), max_epochs=3
    )
    est.set_params(callbacks=[Count()]).fit(*small_digits)
    assert takes_found_inf(est.optimizer_)
    # epoch 1 reads the unfused first step; later ones the epoch's records
    first, *later = reads["per_epoch"]
    assert later[0] == later[1] and later[0] < 12, reads


def test_raise_under_compile_keeps_the_last_finite_weights(small_digits, teacher):
    poison = Poison(epoch=2, batch=2)
    est = make(
        teacher, batch_size=50, compile=True, compile__backend=Recorder()
    ).set_params(callbacks=[poison])
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 2 \(ce = nan"):
        est.fit(*small_digits)
    state = est.module_.state_dict()
    for key, value in poison.saved_.items():
        if not key.endswith("fc.bias") and "running" not in key and "num_" not in key:
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize("fused", [True, False])
def test_skip_under_compile_equals_the_eager_skip(small_digits, teacher, fused):
    kind = {"optimizer__fused": True} if fused else {"optimizer__foreach": True}
    results = []
    for compiled in (True, False):
        poison = Poison(epoch=1, batch=3, heal=True)
        compile_ = dict(compile=True, compile__backend=Recorder()) if compiled else {}
        est = make(
            teacher,
            batch_size=50,
            max_epochs=2,
            nonfinite_loss="skip",
            **kind,
            **compile_,
        ).set_params(callbacks=[poison])
        with pytest.warns(RuntimeWarning, match=r"epoch 1, batch 3 \(ce = nan"):
            est.fit(*small_digits)
        results.append(est)
    compiled_fit, eager_fit = results
    assert compiled_fit.history[:, "train_skipped"] == [1, 0]
    np.testing.assert_allclose(
        compiled_fit.history[:, "train_loss"],
        eager_fit.history[:, "train_loss"],
        rtol=1e-6,
    )
    rows = compiled_fit.history[0, "batches"]
    assert "train_loss" not in rows[2] and "train_loss" in rows[3]


def test_a_subclass_replacing_the_loss_keeps_eager_steps(teacher):
    class Custom(ProjectorDistiller):
        def get_loss(self, *args, **kwargs):
            return super().get_loss(*args, **kwargs)

    assert not Custom(teacher, DigitsCNN, compile=True).uses_graph_step()
    assert ProjectorDistiller(teacher, DigitsCNN, compile=True).uses_graph_step()
    assert not ProjectorDistiller(teacher, DigitsCNN).uses_graph_step()


@needs_cuda
def test_reduce_overhead_trains_as_the_eager_step_does(small_digits):
    """CUDA graphs (inductor): the records copied out of the graph's pool
    match an eager fit's (to inductor's rounding), the last batch included."""
    teacher = DigitsCNN(width=8, n_features=32).eval()
    fast = dict(device="cuda", callbacks=[milestone()])
    graphs = make(
        teacher, compile=True, compile__mode="reduce-overhead", **copy.deepcopy(fast)
    ).fit(*small_digits)
    eager = make(teacher, **copy.deepcopy(fast)).fit(*small_digits)
    np.testing.assert_allclose(
        graphs.history[:, "train_loss"], eager.history[:, "train_loss"], rtol=1e-3
    )
    rows = graphs.history[-1, "batches"]
    assert len({row["train_loss"] for row in rows}) == len(rows)  # not overwritten
    X = small_digits[0][:20]
    np.testing.assert_allclose(
        graphs.predict_proba(X), eager.predict_proba(X), atol=1e-3
    )
