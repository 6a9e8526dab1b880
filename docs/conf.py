"""Sphinx configuration for the hermes_gevent documentation.

Build: ``.venv/bin/python -m sphinx docs docs/_build/html`` (tests/test_docs.py builds it with -W).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the package from this checkout, installed or not

import hermes_gevent  # noqa: E402

project = "hermes_gevent"
author = "hermes_gevent contributors"
copyright = "hermes_gevent contributors"
release = version = hermes_gevent.__version__

extensions = [
    "sphinx.ext.autodoc",
    "hermes_settings",  # docs/_ext/hermes_settings.py: the settings reference, from the code
]

# alabaster ships with Sphinx: no theme dependency to pin or keep up with.
html_theme = "alabaster"
html_theme_options = {
    "description": "A resilient WebSocket client for gevent processes",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_static_path: list[str] = []
exclude_patterns = ["_build", "snippets", "examples"]

autodoc_typehints = "none"  # signatures stay readable; the package is typed (py.typed, mypy --strict)
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
