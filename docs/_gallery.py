"""sphinx-gallery helpers: show the PNG files an example writes.

projkd's plot functions save figures to files and close them, so the
matplotlib scraper sees none; this scraper moves the PNGs an example block
wrote (below the folder it runs in) into the gallery's image slots. It is the
"PNG scraper" of sphinx-gallery's documentation, restricted to new files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: Any) -> str:
    src_dir = Path(block_vars["src_file"]).parent
    new = sorted(p for p in src_dir.rglob("*.png") if "_build" not in p.parts)
    image_paths = []
    names = block_vars["image_path_iterator"]
    for png, target in zip(new, names, strict=False):
        shutil.move(str(png), target)
        image_paths.append(target)
    for png in new:  # never leave build output in the source tree
        png.unlink(missing_ok=True)
    return figure_rst(image_paths, gallery_conf["src_dir"])


def _get_sg_image_scraper() -> Any:
    """sphinx-gallery resolves ``image_scrapers = ("_gallery",)`` through this
    (a name, unlike a function, keeps the configuration picklable)."""
    return png_scraper
