"""Sphinx configuration of projkd's documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html``. Cross-links to
torch, scikit-learn and skorch (intersphinx) need their inventories from the
internet; set ``PROJKD_DOCS_OFFLINE=1`` to build without them.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import projkd  # noqa: E402

project = "projkd"
author = "the projkd developers"
copyright = "2026, the projkd developers"
release = version = projkd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
exclude_patterns = ["_build", "method.md"]
templates_path = ["_templates"]
html_theme = "alabaster"
html_static_path: list[str] = []

if os.environ.get("PROJKD_DOCS_OFFLINE") == "1":
    intersphinx_mapping: dict[str, tuple[str, None]] = {}
else:
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable", None),
    }
