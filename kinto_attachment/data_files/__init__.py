"""``/data/files``: temporary files with SlimFaas's semantics (a raw body, an id, a ttl, a
visibility, a transfer limiter), their metadata in Kinto's storage
(:mod:`kinto_attachment.state.data_file_entries`) so that every node sees the same files.
:mod:`.views` answers; :mod:`.options` reads ``data_files.*``; :mod:`.visibility` and
:mod:`.cross_site` decide who may reach a file; :mod:`.limiter` bounds the bytes in flight."""
