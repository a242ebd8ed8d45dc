"""The wire protocols of uploads, apart from where the bytes go: multipart forms
(:mod:`.multipart`, kinto-attachment's ``POST``) and tus 1.0 (:mod:`.tus`, resumable uploads).
They parse and answer; they import neither ``state/`` nor a store, so each is tested alone."""
