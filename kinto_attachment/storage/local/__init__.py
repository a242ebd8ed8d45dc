"""Blobs as files under ``base_path``: the store (:mod:`.store`) and its settings
(:mod:`.options`)."""

from .. import StoreKind
from . import options
from .store import TEMP_PREFIX, LocalStaged, LocalStore


KIND = StoreKind(
    description="local folder",
    chosen_by="base_path",
    section="",
    table=options,
    store=(f"{__name__}.store", "LocalStore"),
)

__all__ = ["KIND", "TEMP_PREFIX", "LocalStaged", "LocalStore"]
