"""``kinto migrate``: the events' outbox index, and adoption."""

import logging

from kinto.core.storage.postgresql import PostgreSQLPluginMigration

from ..events import claims
from ..state import instance, shared
from . import adopt


logger = logging.getLogger(__name__)


class Migration(PostgreSQLPluginMigration):
    """``kinto migrate``: the index of the events' outbox (:mod:`.events.claims`), and adopt
    kinto-attachment's data (Kinto runs plugin migrations on PostgreSQL only; on the memory
    backend nothing outlives the process to adopt).

    Not a schema version: adoption runs at every ``kinto migrate`` (``--dry-run`` reports
    what it would do), and does nothing once everything is ours. Its report is logged by
    :func:`adopt`, like Kinto's own migration messages (``kinto migrate -q`` silences both).
    """

    name = "kinto_attachment_streaming"

    def __init__(self, registry):
        self.registry = registry

    def initialize_schema(self, client, dry_run=False):
        if shared.read_only(self.registry):
            # As Kinto's own migration: a read-only node (often on a read replica) writes
            # nothing, and its ``kinto migrate`` goes on; a read-write node's does this.
            logger.info("Adoption of kinto-attachment data: left to a node that is not readonly")
            return
        if client is not None and dry_run and not _current_tables(self.registry.storage):
            # Kinto's own dry run created or migrated no table: adoption would query tables
            # that are not there (or not yet named as Kinto names them now: Kinto 13's
            # ``records``). A fresh database holds nothing of kinto-attachment's either.
            logger.info(
                "Adoption of kinto-attachment data: counted once Kinto's tables are migrated"
            )
            return
        if client is not None and not dry_run:
            claims.create_index(client)
            instance.tag(self.registry)  # Made here, read by the servers as they start.
        adopt(self.registry, dry_run=dry_run)


def _current_tables(storage):
    """Whether Kinto's PostgreSQL storage schema is there, at Kinto's current version (a
    backend that does not say: yes)."""
    installed_version = getattr(storage, "get_installed_version", None)
    return installed_version is None or installed_version() == storage.schema_version
