"""See what projectors do: comparison tables, layer similarity and plots.

The paper's three findings, for your own models: the train/test trade-off
(accuracy gap), similarity to the teacher (CKA) and calibration (ECE,
over-confidence).

- :mod:`.tables`: :func:`compare` makes the table, :func:`format_markdown`
  and :func:`cost_summary` print it;
- :mod:`.layers`: :func:`layer_cka` between the blocks of two networks;
- :mod:`.plots`: the ``plot_*`` functions write PNG files with matplotlib
  (the ``plot`` extra), rendered headless;
- :mod:`.cost`: parameters, MACs and measured speed of a network.
"""

from .layers import layer_cka
from .plots import plot_accuracy_curves, plot_cka_heatmap, plot_reliability_diagrams
from .tables import (
    MarkdownTable,
    compare,
    cost_summary,
    format_markdown,
    to_dataframe,
)

__all__ = [
    "compare",
    "cost_summary",
    "MarkdownTable",
    "format_markdown",
    "layer_cka",
    "plot_accuracy_curves",
    "plot_cka_heatmap",
    "plot_reliability_diagrams",
    "to_dataframe",
]
