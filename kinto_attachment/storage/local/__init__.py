"""Blobs as files under ``base_path``: the store (:mod:`.store`), the file it writes each
blob through (:mod:`.staged`) and its settings (:mod:`.options`)."""

from .. import StoreKind
from . import options
from .staged import TEMP_PREFIX, LocalStaged
from .store import LocalStore


# StoreKind(description, chosen_by, section, table, store)
KIND = StoreKind("local folder", "base_path", "", options, (f"{__name__}.store", "LocalStore"))

__all__ = ["KIND", "TEMP_PREFIX", "LocalStaged", "LocalStore"]
