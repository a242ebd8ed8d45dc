"""HTTP entry points: the attachment service (Cornice), and plain Pyramid routes for tus, the
default bucket, ``/data/files`` and ``serve_files``; the logic lives in the modules above."""
