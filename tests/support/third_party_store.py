"""A store of another package, in one module, as ``kinto.attachment.store =
tests.support.third_party_store`` names it: what a package adding a store provides, using only the
public names of ``kinto_attachment.storage`` (the local store wrapped, so that the tests need
no service).

Its settings are under a section of its own, ``third_party.``: ``folder`` configures (chooses)
it, ``fsync`` is optional. Its option table is a class rather than a module.
"""

import dataclasses
from typing import ClassVar

from pyramid.exceptions import ConfigurationError
from pyramid.settings import asbool

from kinto_attachment.storage import StoreKind
from kinto_attachment.storage.local import LocalStore


SECTION = "third_party."


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    folder: str
    fsync: bool = True

    NAMES: ClassVar = ("folder", "fsync")

    @classmethod
    def from_settings(cls, values):
        for name in values:
            if name not in cls.NAMES:
                raise ConfigurationError(
                    f"Invalid setting `kinto.attachment.{SECTION}{name}`: unknown setting"
                )
        folder = str(values.get("folder") or "").strip()
        if not folder:
            return None
        return cls(folder, fsync=asbool(values.get("fsync", True)))


class WrappedStore(LocalStore):
    """The local store, remembering the keys it staged: the tests see it was the one used."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.staged = []

    @classmethod
    def from_options(cls, options, *, base_url="", default_cache_control=""):
        return cls(options.folder, base_url, fsync=options.fsync)

    def stage(self, key, content_type=None, random=False):
        self.staged.append(key)
        return super().stage(key, content_type, random)


KIND = StoreKind(
    description="third-party folder",
    chosen_by=SECTION + "folder",
    section=SECTION,
    table=FolderOptions,
    store=(__name__, "WrappedStore"),
)
