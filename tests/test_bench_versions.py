"""benchmarks/bench_versions.py: two versions of projkd in one process."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_versions.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_compares_a_copy_of_a_package_with_this_checkout():
    done = run("--base", str(ROOT / "projkd"), "--epochs", "2")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "ours / base" in line]
    assert [row.split(":")[0] for row in rows] == [
        "teacher cache on ",
        "teacher cache off",
    ]
    for row in rows:
        assert math.isfinite(float(row.rsplit(" ", 1)[1])), row


def test_a_base_that_is_not_a_package_is_one_line(tmp_path):
    done = run("--base", str(tmp_path))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(f"error: {tmp_path} is not a package directory (no __init__.py)")
    )
    assert "Traceback" not in done.stderr
