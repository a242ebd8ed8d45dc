"""``kinto-attachment``: upload, download and sync the attachments of a Kinto collection.

What people who publish datasets, fonts or certificates to a collection script by hand, as one
command installed with the plugin: large files go through resumable (tus) uploads that survive
an interruption, downloads resume with ``Range`` and are verified against the record's sha256,
and ``sync`` makes a collection mirror a folder, sending only what changed.

- :mod:`.main`: the command line (options, subcommands, exit codes);
- :mod:`.remote`: the server (one HTTP session with retries, records, errors; credentials to
  its origin only);
- :mod:`.names`: one way to name things, and the only way a server's names become local ones;
- :mod:`.uploads` and :mod:`.downloads`: one file each way;
- :mod:`.folder`: writing inside a folder and nowhere else (no link followed);
- :mod:`.sync`: a folder against a collection, and which records are the folder's;
- :mod:`.progress`: what the terminal shows.
"""
