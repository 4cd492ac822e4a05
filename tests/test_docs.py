"""The documentation builds with no warnings (sphinx -W)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")

DOCS = Path(__file__).parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    env = {**os.environ, "PROJKD_DOCS_OFFLINE": "1"}  # no inventories offline
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
