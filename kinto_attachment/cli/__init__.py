"""``kinto-attachment``: upload, download and sync the attachments of a Kinto collection.

What people who publish datasets, fonts or certificates to a collection script by hand, as one
command installed with the plugin: large files go through resumable (tus) uploads that survive
an interruption, downloads resume with ``Range`` and are verified against the record's sha256,
and ``sync`` makes a collection mirror a folder, sending only what changed.

- :mod:`.main`: the command line (options, subcommands, exit codes);
- :mod:`.remote`: the server (one HTTP session with retries, records, errors);
- :mod:`.uploads` and :mod:`.downloads`: one file each way;
- :mod:`.sync`: a folder against a collection;
- :mod:`.progress`: what the terminal shows.
"""
