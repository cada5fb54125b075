"""The PostgreSQL server the benchmarks run on, and the database each measure folder gets there.

The server is postgresql://postgres@127.0.0.1:5432/postgres unless the
PERSISTENTQ_BENCH_POSTGRES environment variable names another one. Every
folder the harness gives a PostgreSQL design maps to a database of its own,
named from a hash of the folder's path, so the processes of one measure meet
in one database and no two measures share one. The runner drops each
database once its measure ends; a run that was killed leaves databases whose
names start with "pqbench_", which `DROP DATABASE` removes.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from persistentq.store.postgres import redact_url

SERVER_VARIABLE = "PERSISTENTQ_BENCH_POSTGRES"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "pqbench_"
CONNECT_TIMEOUT_S = 5


def server_url() -> str:
    return os.environ.get(SERVER_VARIABLE) or DEFAULT_SERVER


def database_name(folder: Path) -> str:
    """Return the database name of a measure folder: the prefix and 20 hex digits of the path's hash."""
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:20]
    return DATABASE_PREFIX + digest


def database_url(database: str) -> str:
    """Return the server URL with its database name replaced by `database`."""
    base, _, query = server_url().partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    url = f"{scheme}://{authority}/{database}"
    return f"{url}?{query}" if query else url


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(server_url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


@functools.lru_cache(maxsize=1)
def unreachable_reason() -> str | None:
    """Return why the server cannot be used (once per process), or None when it accepts a connection."""
    import psycopg

    try:
        with _admin_connection() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return f"PostgreSQL at {redact_url(server_url())} is unreachable ({reason}); start it or set {SERVER_VARIABLE}"
    return None


def open_database(folder: Path, *, template: str | None = None) -> str:
    """Create the database of `folder` unless it exists, as a copy of `template` when given; return its URL."""
    import psycopg
    from psycopg import sql

    name = database_name(folder)
    with _admin_connection() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template is not None:
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            try:
                conn.execute(statement)
            except psycopg.errors.DuplicateDatabase:
                pass  # another process of the same measure created it first
    return database_url(name)


def drop_database(folder: Path) -> None:
    """Drop the database of `folder` if it exists, ending any session still connected to it."""
    from psycopg import sql

    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database_name(folder)))
    with _admin_connection() as conn:
        conn.execute(statement)


def show_setting(url: str, name: str) -> str:
    """Return the value of the server setting `name` in a new session on `url`."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return str(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])
