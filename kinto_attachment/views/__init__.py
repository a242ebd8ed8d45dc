"""HTTP entry points: the attachment service (Cornice), and plain Pyramid routes for tus, the
default bucket and ``serve_files``, registered from :mod:`kinto_attachment.routes`; the logic
lives in the modules below (``uploads/`` for uploads, ``downloads/`` for downloads)."""
