"""Opening the store that a config names."""

from __future__ import annotations

from ..config import Config
from .base import PersistentQStore
from .sqlite import PersistentQSQLite


def open_store(config: Config) -> PersistentQStore:
    """Open the queue of `general.database`: a SQLite file, or a PostgreSQL URL.

    A PostgreSQL pool gets enough connections for this process's workers.
    """
    if config.database_url is not None:
        from .postgres import PersistentQPostgres, pool_size

        n_workers = config.general.n_prod + config.general.n_cons + 1  # the cleaner
        return PersistentQPostgres(
            config.database_url,
            max_connections=pool_size(n_workers),
            synchronous=config.general.synchronous,
        )
    return PersistentQSQLite(config.database_path, synchronous=config.general.synchronous)
