"""The local store's settings: ``kinto.attachment.base_path`` and ``serve_files``.

kinto-attachment named them without a section of their own, and so do we: the local store's
settings are global names, the others' are under ``aws.`` and ``gcloud.``. :func:`from_settings`
takes their values, as the option tables of the other stores do.
"""

import dataclasses
import os

from ...setting_values import as_bool, as_text, fail


#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment."


@dataclasses.dataclass(frozen=True)
class LocalOptions:
    """The local store's settings."""

    #: The folder of the files.
    base_path: str
    #: Serve ``base_path`` under ``/v1/attachments/`` (development convenience).
    serve_files: bool = False

    @property
    def redirect_expires(self):
        """Never set: downloads through Kinto stream the file, there is no URL to sign."""
        return None


#: Every name accepted (``kinto.attachment.NAME``); same names as the fields of LocalOptions.
NAMES = ("base_path", "serve_files")


def from_settings(values):
    """:class:`LocalOptions` from the ``base_path`` and ``serve_files`` settings.

    None when no ``base_path`` is set (another store is used); ConfigurationError naming the
    setting when ``serve_files`` is not a boolean, or is set without ``base_path``.
    """
    base_path = as_text(PREFIX + "base_path", values.get("base_path") or "")
    serve_files = as_bool(PREFIX + "serve_files", values.get("serve_files", False))
    if not base_path:
        if serve_files:
            fail(PREFIX + "serve_files", "only applies to local storage (`base_path`)")
        return None
    base_path = os.path.expanduser(base_path)
    if not os.path.isabs(base_path):
        # Resolved against each process's working folder: the server, ``kinto migrate`` and
        # the collector, started from different folders, would each see a store of its own.
        fail(
            PREFIX + "base_path",
            f"{base_path!r} is relative: give an absolute path, or %(here)s/{base_path} "
            "(the ini file's folder)",
        )
    return LocalOptions(base_path, serve_files)
