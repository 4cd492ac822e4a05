import subprocess
import sys

from projkd.cli import main
from projkd.demo import VARIANTS


def test_demo_prints_a_row_per_model(capsys):
    assert main(["demo", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| model | train acc | test acc | gap |" in out
    for name in ["teacher", *VARIANTS]:
        assert f"| {name} |" in out


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "projkd", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "demo" in result.stdout
