"""What the plugin keeps in Kinto's storage backend, beside Kinto's own objects.

Everything here is written in the request's transaction, so it commits or rolls back with the
records it describes, and with PostgreSQL every node of a cluster shares it:

- :mod:`.links`: which blob belongs to which record (blobs of deleted buckets and collections);
- :mod:`.records`: reading and writing the records an upload attaches to;
- :mod:`.tus_uploads`: the state of resumable (tus) uploads;
- :mod:`.data_file_entries`: the entries of ``/data/files``;
- :mod:`.replaced`: blobs nothing references any more, kept until the downloads that
  started before have read them;
- :mod:`.outbox`: the events not delivered yet (and those delivered, for a while);
- :mod:`.references`: every key the above refer to, read for the garbage collector;
- :mod:`.shared`: whether a command sees the servers' state;
- :mod:`.paging`: walks over a resource by pages.

The blob stores themselves are :mod:`kinto_attachment.storage`.
"""
