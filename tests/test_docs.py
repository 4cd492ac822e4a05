"""The documentation builds with no warnings (sphinx -W), the example gallery
executed, results rendered as tables and formulas as math."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("sphinx_gallery")
pytest.importorskip("myst_parser")
pytest.importorskip("pydata_sphinx_theme")
pytest.importorskip("matplotlib")

DOCS = Path(__file__).parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    env = {
        **os.environ,
        "PROJKD_DOCS_OFFLINE": "1",  # no inventories offline
        "PROJKD_EXAMPLE_EPOCHS": "1",  # the gallery runs every example
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "html" / "user_guide.html").exists()
    api = (tmp_path / "html" / "api.html").read_text()
    assert "ProjectorDistiller" in api and "linear_cka" in api
    html = tmp_path / "html"
    # result files are rendered as tables, not shown as markdown source
    bench = (html / "benchmarks.html").read_text()
    assert bench.count("<table") >= 4 and "|---" not in bench
    # formulas are math (MathJax markup), not code
    guide = (html / "user_guide.html").read_text()
    assert r"\mathrm{CKA}" in guide and 'class="math' in guide
    # every example ran and shows its output; the plotting ones their figures
    gallery = html / "auto_examples"
    for example in (DOCS.parent / "examples").glob("*.py"):
        page = (gallery / f"{example.stem}.html").read_text()
        assert "sphx-glr-script-out" in page, example.stem
    images = {p.name for p in html.rglob("sphx_glr_*.png") if "thumb" not in p.name}
    assert {f"sphx_glr_analysis_plots_00{i}.png" for i in (1, 2, 3)} <= images
    assert "sphx_glr_grid_search_001.png" in images
