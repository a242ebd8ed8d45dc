"""``kinto migrate``: the events' outbox index, and adoption."""

import logging

from kinto.core.storage.postgresql import PostgreSQLPluginMigration

from ..events import claims
from ..state import instance
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
        if client is not None and dry_run and not _has_tables(self.registry.storage):
            # Kinto's own dry run created no table: adoption would query tables that are
            # not there. A fresh database holds nothing of kinto-attachment's either.
            logger.info("Adoption of kinto-attachment data: Kinto's tables are not created yet")
            return
        if client is not None and not dry_run:
            claims.create_index(client)
            instance.tag(self.registry)  # Made here, read by the servers as they start.
        adopt(self.registry, dry_run=dry_run)


def _has_tables(storage):
    """Whether Kinto's PostgreSQL storage schema exists (a backend that does not say: yes)."""
    installed_version = getattr(storage, "get_installed_version", None)
    return installed_version is None or installed_version() is not None
