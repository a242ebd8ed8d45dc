"""How a record's ``location`` names a key of the store, whatever base URL it was written
under: the rule adoption applies to kinto-attachment's rows (step 1) and to the copies that
name an adopted file (step 2)."""

from urllib.parse import unquote, urlsplit

from ..state import legacy, links


def names(store, location, key):
    """Whether the record's ``location`` names ``key``, which a kinto-attachment row links
    to the record: its URL, or one under another base URL than ours (written before the CDN
    moved: the path ends with the key). The row links them whatever the URL; adoption keeps
    that link (the download, and the deletion with the record)."""
    if not location:
        return False
    if store.url(key) == location or store.key_for_url(location) == key:
        return True
    return key in path_keys(location)


def path_keys(location):
    """The keys a location names under any base URL: its path, and each end of it after a
    ``/`` (``a/b.txt`` and ``b.txt`` for ``https://cdn/a/b.txt``). A bare key (what
    kinto-attachment wrote with its default, empty, ``base_url``) is its own path."""
    try:
        path = unquote(urlsplit(location).path)
    except ValueError:  # "https://[cdn/x": no URL (kinto-attachment let clients write any).
        return set()
    if "\x00" in path:  # No key holds one (see ``key_for_url``).
        return set()
    parts = path.split("/")
    return {"/".join(parts[i:]) for i in range(len(parts)) if parts[i]}


def linked_keys(storage, location, dry_run):
    """The keys a location outside ``base_url`` names by the rule of :func:`names` that a
    link (or, in a dry run, a kinto-attachment row) names: the record is a copy of an adopted
    one (kinto-signer's), naming its file by a URL written before the CDN moved, and deleting
    the original must not delete the file the copy names. Empty otherwise: a location no link
    vouches for is never guessed."""
    candidates = path_keys(location)
    # A file step 1 retained (its row's record names another) is one a link named.
    linked = links.linked_among(storage, candidates) | links.retained_among(storage, candidates)
    if dry_run:  # Step 1 only counted the rows it would make links, or retain.
        linked |= {key for key in candidates if legacy.names(storage, key)}
    return linked
