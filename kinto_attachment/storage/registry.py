"""Which store the settings choose, among the kinds of store there are.

A kind of store is a package exporting ``KIND`` (:class:`~kinto_attachment.storage.StoreKind`):
the settings it owns, how they configure it, how it is built. The built-in ones are listed
below; another package's is named by ``kinto.attachment.store = some.module`` (a dotted path,
as Kinto names its backends), which adds it to them without any change here. The settings
present choose: exactly one store must be configured.
"""

import dataclasses
import importlib

from pyramid.exceptions import ConfigurationError

from ..setting_values import fail
from . import StoreKind, gcs, local, s3


#: Where our names live, after Kinto's ``kinto.`` (which error messages add).
PREFIX = "attachment."
#: The setting naming the module of another store.
SETTING = "store"
#: The stores of this package, one line each.
BUILT_IN = (
    local.KIND,
    s3.KIND,
    gcs.KIND,
)


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The store the settings choose: its kind, and its options."""

    kind: StoreKind
    options: object

    def option(self, name, default=None):
        """One of its options, or ``default`` when this store has none of that name (only S3
        limits ``max_file_size``; another package's store need not know ``redirect_expires``)."""
        return getattr(self.options, name, default)

    def build(self, base_url="", default_cache_control=""):
        return self.kind.build(self.options, base_url, default_cache_control)


def load(dotted):
    """The kind of store that the module ``dotted`` exports as ``KIND``."""
    name = PREFIX + SETTING
    try:
        module = importlib.import_module(dotted)
    except ImportError as e:
        fail(name, f"cannot import {dotted!r}: {e}")
    kind = getattr(module, "KIND", None)
    if not isinstance(kind, StoreKind):
        fail(name, f"{dotted!r} exports no KIND (a kinto_attachment.storage.StoreKind)")
    return kind


def kinds(dotted=""):
    """The kinds of store to choose from: the built-in ones, and the one of the module
    ``dotted`` names (the ``store`` setting), which needs a settings section of its own."""
    if not dotted:
        return BUILT_IN
    kind = load(dotted)
    if kind in BUILT_IN:
        return BUILT_IN
    taken = [other.section for other in BUILT_IN if other.section]
    if not kind.section.endswith(".") or any(
        kind.section.startswith(section) or section.startswith(kind.section) for section in taken
    ):
        fail(
            PREFIX + SETTING,
            f"the settings of {dotted!r} need a section of their own (such as `azure.`), "
            f"not {kind.section!r}",
        )
    return (*BUILT_IN, kind)


def choose(kinds, values):
    """The one store configured among ``kinds``, each given its settings by ``values`` (kind →
    its values, keyed by name after its section). None or several configured stop start-up,
    naming the settings that choose them."""
    configured = []
    for kind in kinds:
        options = kind.from_settings(values.get(kind, {}))
        if options is not None:
            configured.append(Chosen(kind, options))
    if len(configured) == 1:
        return configured[0]
    named = [chosen.kind for chosen in configured] or kinds
    names = ", ".join(f"`kinto.{PREFIX}{kind.chosen_by}` ({kind.description})" for kind in named)
    raise ConfigurationError(
        f"Attachment storage: {names} are set; keep exactly one of them."
        if configured
        else f"Attachment storage: set exactly one of {names}."
    )
