"""ResumableCheckpoint survives crashes while saving and names a torn run."""

import os

import pytest
import torch
from skorch.callbacks import Callback

from projkd import ProjectorDistiller
from projkd.callbacks import CheckpointError, ResumableCheckpoint
from projkd.models import DigitsCNN

from .conftest import FAST


def make(teacher, dirname, **params):
    kwargs = dict(FAST, student=DigitsCNN, student__width=4, student__n_features=16)
    kwargs.update(random_state=0, batch_size=100, max_epochs=2, **params)
    return ProjectorDistiller(
        teacher, callbacks=[ResumableCheckpoint(dirname=str(dirname))], **kwargs
    )


def run_folder(dirname):
    (folder,) = [p for p in dirname.iterdir() if p.is_dir()]
    return folder


def test_truncated_checkpoint_error_names_the_run_folder(
    tmp_path, teacher, small_digits
):
    X, y = small_digits
    make(teacher, tmp_path).fit(X, y)
    folder = run_folder(tmp_path)
    params = folder / "params.pt"
    params.write_bytes(params.read_bytes()[: params.stat().st_size // 2])

    with pytest.raises(CheckpointError) as info:
        make(teacher, tmp_path).fit(X, y)
    message = str(info.value)
    assert str(folder) in message
    assert "afresh" in message and "delete" in message

    # following the advice starts the run again
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    assert len(make(teacher, tmp_path).fit(X, y).history) == 2


class ArmAtEpoch(Callback):
    """Sets ``armed`` when the given epoch begins."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.armed = False

    def on_epoch_begin(self, net, **kwargs):
        self.armed = len(net.history) == self.epoch


def test_crash_while_saving_keeps_the_previous_epoch_intact(
    tmp_path, teacher, small_digits, monkeypatch
):
    X, y = small_digits
    real_save = torch.save
    arm = ArmAtEpoch(2)

    def dying_save(obj, f, *args, **kwargs):
        if arm.armed:  # the second epoch's first file: torn, then the crash
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 torn")
            raise OSError("simulated crash while saving")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    crashing = make(teacher, tmp_path)
    crashing.set_params(callbacks=[*crashing.callbacks, arm])
    with pytest.raises(OSError, match="simulated crash"):
        crashing.fit(X, y)
    monkeypatch.setattr(torch, "save", real_save)

    folder = run_folder(tmp_path)
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
    for name in ("params.pt", "optimizer.pt", "projectors.pt"):
        torch.load(folder / name, weights_only=True)  # whole, from epoch 1
    resumed = make(teacher, tmp_path).fit(X, y)
    assert len(resumed.history) == 2
