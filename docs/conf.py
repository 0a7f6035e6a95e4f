"""Sphinx configuration of the zf_attr documentation (Markdown pages via MyST, API reference via autodoc).

Build it as CI does, with every warning an error::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import zf_attr

project = "zf_attr"
author = "zf_attr developers"
copyright = "2026, zf_attr developers"
release = zf_attr.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True

html_theme = "furo"
html_title = f"zf_attr {release}"
html_static_path: list[str] = []
