"""Opening the store that a config names."""

from __future__ import annotations

from ..config import Config
from ..errors import StoreError
from .base import PersistentQStore
from .sqlite import PersistentQSQLite


def open_store(config: Config, *, create: bool = True) -> PersistentQStore:
    """Open the queue of `general.database`: a SQLite file, or a PostgreSQL URL.

    A PostgreSQL pool gets enough connections for this process's workers.
    Without `create`, a queue that does not exist yet raises StoreError, so a
    command run against the wrong folder or database reports no empty queue.
    """
    if config.database_url is not None:
        from .postgres import PersistentQPostgres, pool_size

        n_workers = config.general.n_prod + config.general.n_cons + 1  # the cleaner
        return PersistentQPostgres(
            config.database_url,
            max_connections=pool_size(n_workers),
            synchronous=config.general.synchronous,
            create=create,
        )
    database = config.database_path
    if not create and not database.exists():
        source = f"config {config.source}" if config.source else "the built-in defaults (no config.yaml here)"
        raise StoreError(
            f"no queue at {database}, the database of {source}; pass --config with the config "
            "of your queue, or start one with basic run or basic enqueue"
        )
    return PersistentQSQLite(config.database_path, synchronous=config.general.synchronous)
