import pickle

import pytest
import torch

from projkd.models import DigitsCNN
from projkd.teacher import load_teacher, save_teacher, train_teacher


def test_train_save_and_load_round_trip(tmp_path, small_digits):
    teacher = train_teacher(
        DigitsCNN(width=4), *small_digits, max_epochs=1, random_state=0
    )
    assert not teacher.training
    path = tmp_path / "teacher.pt"
    save_teacher(teacher, path)
    loaded = load_teacher(DigitsCNN(width=4), path)
    x = torch.as_tensor(small_digits[0][:5])
    torch.testing.assert_close(loaded(x), teacher(x))
    assert not loaded.training


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_teacher(DigitsCNN(width=4), path)
    assert not marker.exists()
