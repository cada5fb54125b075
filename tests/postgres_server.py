"""The PostgreSQL server of the tests: a database per session, a schema per test.

The server is postgresql://postgres@127.0.0.1:5432/postgres unless the
PERSISTENTQ_TEST_POSTGRES environment variable names another one. Tests that
need it skip with the reason when it is missing, and fail under CI.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from external import skip_or_fail

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_VARIABLE = "PERSISTENTQ_TEST_POSTGRES"
CONNECT_TIMEOUT_S = 5


def import_psycopg():
    """Return the psycopg module for a test module; without it, skip the module, or fail under CI."""
    try:
        import psycopg
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("psycopg is not installed: pip install -e '.[dev]'", allow_module_level=True)
    return psycopg


def server_url() -> str:
    return os.environ.get(SERVER_VARIABLE) or DEFAULT_SERVER


def database_url(server: str, database: str) -> str:
    """Return `server` with its database name replaced by `database`."""
    base, _, query = server.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    url = f"{scheme}://{authority}/{database}"
    return f"{url}?{query}" if query else url


@contextmanager
def session_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, and drop it afterwards."""
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed: pip install -e '.[dev]'")
    server = server_url()
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        skip_or_fail(f"no PostgreSQL server at {server} ({exc}); set {SERVER_VARIABLE} to one")
    name = f"persistentq_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url(server, name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_name(tmp_path: Path) -> str:
    """Return a PostgreSQL schema name unique to one test, derived from its tmp_path."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", tmp_path.name.lower())[:40]
    return f"t_{cleaned}_{uuid.uuid4().hex[:8]}"


def fresh_schema_store(url: str, tmp_path: Path, **options: object):
    """Open a PersistentQPostgres store on `url` in a new schema of its own."""
    from persistentq.store.postgres import PersistentQPostgres

    return PersistentQPostgres(url, schema=schema_name(tmp_path), **options)
