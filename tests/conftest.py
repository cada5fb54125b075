"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from persistentq.store import PersistentQSQLite, PersistentQStore

# Stores: the contract suite runs once per kind listed here. A new backend
# appends its kind and adds a branch to `make_store`.

STORE_KINDS = ["sqlite"]


def make_store(kind: str, tmp_path: Path) -> PersistentQStore:
    """Build an empty store of `kind` whose data lives under `tmp_path`."""
    if kind == "sqlite":
        return PersistentQSQLite(tmp_path / "queue.sqlite3")
    raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PersistentQStore]:
    """An empty store of each kind in STORE_KINDS, closed after the test."""
    queue_store = make_store(request.param, tmp_path)
    try:
        yield queue_store
    finally:
        queue_store.close()
