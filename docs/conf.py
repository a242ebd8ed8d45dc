"""Sphinx configuration of kinto_attachment's documentation (``make docs``).

The pages are plain reStructuredText: nothing here imports the package, so the build needs only
Sphinx and its theme (the ``docs`` extra), and a page never depends on the code's layout.
"""

project = "kinto_attachment"
author = "kinto_attachment contributors"
copyright = "kinto_attachment contributors"

extensions = []
exclude_patterns = ["_build"]
# Code blocks are shell, Python, ini, JSON and JavaScript, each declared; literal blocks (``::``)
# are shown as written.
highlight_language = "none"

html_theme = "sphinx_rtd_theme"
html_title = "kinto_attachment"
html_theme_options = {"navigation_depth": 3}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["tables.css"]
