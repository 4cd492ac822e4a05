"""The examples run as they are (with one epoch, in a scratch folder)."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, tmp_path, monkeypatch, capsys):
    if path.stem == "analysis_plots":
        pytest.importorskip("matplotlib")
    if path.stem == "huggingface":
        pytest.importorskip("transformers")
    monkeypatch.setenv("PROJKD_EXAMPLE_EPOCHS", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
    if path.stem == "analysis_plots":
        assert len(list((tmp_path / "projkd-analysis").glob("*.png"))) == 3
