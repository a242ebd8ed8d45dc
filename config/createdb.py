"""Create the PostgreSQL databases a Kinto configuration names, when they do not exist yet.

    .venv/bin/python config/createdb.py config/postgresql.ini

``kinto migrate`` creates tables, not the database they live in: on a fresh PostgreSQL server it
fails with ``database "kinto" does not exist``. This reads the storage, cache and permission
URLs of the configuration as Kinto does (``KINTO_STORAGE_URL``, ``KINTO_CACHE_URL`` and
``KINTO_PERMISSION_URL`` override the file's: ``make serve-pg`` sets them from ``PG_URL``),
connects to the ``postgres`` database of each one's server as its user, and creates the
database each names if missing. It needs psycopg2 (the ``postgresql`` extra).
"""

import sys
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2
from kinto.core.utils import read_env
from psycopg2 import sql
from pyramid.paster import get_appsettings


BACKENDS = ("storage", "cache", "permission")


def database_urls(ini):
    """The distinct PostgreSQL URLs of the configuration's backends, environment first."""
    settings = get_appsettings(ini)
    urls = []
    for backend in BACKENDS:
        url = settings.get(f"kinto.{backend}_url") or ""
        url = read_env(f"kinto.{backend}_url", read_env(f"{backend}_url", url))
        if url.startswith(("postgresql://", "postgres://")) and url not in urls:
            urls.append(url)
    return urls


def create_database(url):
    """Create the database ``url`` names unless it exists; whether it was created."""
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(maintenance)
    try:
        # CREATE DATABASE cannot run in a transaction.
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        connection.close()


def main(argv=None):
    (ini,) = argv if argv is not None else sys.argv[1:]
    for url in database_urls(ini):
        database = unquote(urlsplit(url).path.lstrip("/"))
        state = "created" if create_database(url) else "already exists"
        print(f"PostgreSQL database {database!r}: {state}")


if __name__ == "__main__":
    main()
