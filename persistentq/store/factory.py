"""Opening the store that a config names."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import PersistentQStore
from .sqlite import PersistentQSQLite


def open_store(config: Config) -> PersistentQStore:
    """Open the queue of `general.database`: a SQLite file, or a PostgreSQL URL."""
    if config.database_url is not None:
        raise ConfigError(
            f"general.database is a PostgreSQL URL ({_without_password(config.database_url)}), "
            "and this version of persistentq stores queues in SQLite only; "
            "set general.database to a file name such as queue.sqlite3"
        )
    return PersistentQSQLite(config.database_path, synchronous=config.general.synchronous)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
