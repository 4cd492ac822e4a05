"""skorch's own test suite, run on the distiller.

skorch's shared fixtures are imported here; ``test_skorch_*.py`` subclass
skorch's test classes with the distiller as ``net_cls``. The tests a
distiller must fail, each with its reason, are listed in
:mod:`.deselected` and deselected here; the summary line names their count.
"""

from __future__ import annotations

import pytest
from skorch.tests.conftest import *  # noqa: F403

from .deselected import DESELECTED

_SUITE = "tests/skorch_suite/"
_DROPPED = pytest.StashKey[int]()


def _reason(nodeid: str) -> str | None:
    name = nodeid.split("::", 1)[1]
    return DESELECTED.get(name) or DESELECTED.get(name.split("[", 1)[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    dropped = [item for item in items if _SUITE in item.nodeid and _reason(item.nodeid)]
    config.stash[_DROPPED] = len(dropped)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    stats = terminalreporter.stats
    count = {
        key: sum(
            _SUITE in r.nodeid
            for r in stats.get(key, [])
            if r.when in ("call", "setup")
        )
        for key in ("passed", "failed", "error", "skipped")
    }
    deselected = config.stash.get(_DROPPED, 0)
    if any(count.values()) or deselected:
        terminalreporter.section("skorch's own suite on ProjectorDistiller")
        for name, reason in DESELECTED.items():
            terminalreporter.write_line(f"deselected {name}: {reason}")
        terminalreporter.write_line(
            f"skorch's own suite on ProjectorDistiller: {count['passed']} passed, "
            f"{count['failed'] + count['error']} failed, {count['skipped']} skipped, "
            f"{deselected} deselected ({len(DESELECTED)} tests, each with its reason "
            "above and in tests/skorch_suite/deselected.py)"
        )
