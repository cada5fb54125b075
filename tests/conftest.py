"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistentq.store import PersistentQSQLite, PersistentQStore

# Stores: the contract suite runs once per kind listed here. A new backend
# appends its kind and adds a branch to `make_store`.

STORE_KINDS = ["sqlite", "postgres"]


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> PersistentQStore:
    """Build an empty store of `kind` whose data lives under `tmp_path`.

    A PostgreSQL store gets a schema of its own in the session's test
    database, named after `tmp_path`, so each test starts empty.
    """
    if kind == "sqlite":
        return PersistentQSQLite(tmp_path / "queue.sqlite3")
    if kind == "postgres":
        if request is None:
            raise ValueError("make_store needs the test's request for a postgres store")
        from postgres_server import fresh_schema_store

        return fresh_schema_store(request.getfixturevalue("postgres_url"), tmp_path)
    raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PersistentQStore]:
    """An empty store of each kind in STORE_KINDS, closed after the test."""
    queue_store = make_store(request.param, tmp_path, request)
    try:
        yield queue_store
    finally:
        queue_store.close()


# PostgreSQL: one database per test session, dropped at its end.


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database on the test server; skips (or fails under CI) without a server."""
    from postgres_server import session_database

    with session_database() as url:
        yield url
