"""Sphinx configuration of projkd's documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html``. The examples in
``examples/`` are executed at build time by sphinx-gallery (set
``PROJKD_EXAMPLE_EPOCHS=1`` for a quick build). Cross-links to torch,
scikit-learn and skorch (intersphinx) need their inventories from the
internet; set ``PROJKD_DOCS_OFFLINE=1`` to build without them. MathJax is
loaded from its CDN; ``PROJKD_MATHJAX_PATH`` points at a local copy instead.
"""

import importlib.util
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS))

import projkd  # noqa: E402

project = "projkd"
author = "the projkd developers"
copyright = "2026, the projkd developers"
release = version = projkd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
exclude_patterns = ["_build", "method.md", "auto_examples/*.ipynb"]
templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["myst.header"]  # result files start below the top level

html_theme = "pydata_sphinx_theme"
html_title = f"projkd {version}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"**": []}  # wide pages: the section navigation is in the top bar
html_context = {"default_mode": "light"}

if os.environ.get("PROJKD_MATHJAX_PATH"):
    mathjax_path = os.environ["PROJKD_MATHJAX_PATH"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",  # run every example, not only plot_*.py
    # examples whose optional extra is not installed are listed, not run
    "ignore_pattern": r"__init__\.py"
    + ("" if importlib.util.find_spec("transformers") else r"|huggingface\.py"),
    "image_scrapers": ("matplotlib", "_gallery"),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "min_reported_time": 5,
}

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
