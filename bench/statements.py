"""The statements one request sends to PostgreSQL: a plain record ``PUT``, an upload creating
a record, an upload replacing its file (``python bench/statements.py [-v]``; PostgreSQL as for
the tests, ``KINTO_ATTACHMENT_TEST_PG``). ``-v`` lists them."""

import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import conftest  # noqa: E402
from tests.support import statements  # noqa: E402


def main():
    with conftest.own_database("kinto_statements") as pg:
        settings = conftest.build_settings("postgresql", tempfile.mkdtemp(), pg=pg)
        # As deployed (and as the bench's PostgreSQL servers run): a replaced file is kept
        # for the grace, not deleted at once (the tests' 0 adds a query for retained files).
        settings["kinto.attachment.gc.replaced_grace_seconds"] = "600"
        kinto = conftest.Kinto(conftest.make_app(settings), settings["kinto.attachment.base_path"])
        kinto.create_collection()
        counted = statements.of_requests(kinto)
        kinto.registry.storage.client.session_factory.remove()
    for name, sent in counted.items():
        print(f"{name}: {len(sent)} statements")
        if "-v" in sys.argv:
            print("".join(f"    {statement[:200]}\n" for statement in sent))


if __name__ == "__main__":
    main()
