"""Sphinx configuration for the flask_execute documentation."""

from __future__ import annotations

import os
import sys
from importlib import metadata

# Build from a checkout too: the package is importable from the repository root.
sys.path.insert(0, os.path.abspath(".."))

project = "flask_execute"
author = "flask_execute contributors"
copyright = "flask_execute contributors"
try:
    release = metadata.version("flask-execute")
except metadata.PackageNotFoundError:
    release = "dev"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# No network while building: no intersphinx, plain links to other projects.
templates_path: list[str] = []
exclude_patterns = ["_build"]
default_role = "code"
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"flask_execute {release}"
html_theme_options = {
    "description": "Celery for Flask that feels like concurrent.futures.",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
