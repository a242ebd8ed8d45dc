"""The pipeline every upload goes through, whatever its protocol (multipart, tus, a raw
``/data/files`` body): what may be uploaded where (:mod:`.policies`), a stream into a staged
blob with its sha256, size and media type (:mod:`.intake`), the record step, under locks
(:mod:`.record`), and what happens to blobs after the transaction (:mod:`.lifecycle`).
Written once, so the guarantees of consistency hold on every route."""
