"""persistentq: a persistent producer/consumer job queue on SQLite, for notebooks and terminals.

    import asyncio
    from persistentq import WorkerPool, config_from_dict

    async def shout(payload: str) -> str:
        return payload.upper()

    config = config_from_dict({"general": {"n_prod": 0, "n_cons": 2}})
    pool = WorkerPool(config, consumer_function=shout)
    pool.store.put("hello")
    asyncio.run(pool.run(duration_s=5))
"""

from .config import Config, config_from_dict, load_config
from .errors import (
    ConfigError,
    InvalidStateError,
    JobNotFoundError,
    JobTimeoutError,
    PayloadTooLargeError,
    PermanentJobError,
    PersistentQError,
    StoreError,
    WorkerProcessError,
)
from .files import FilePipeline
from .pool import WorkerPool
from .store import Job, JobState, PersistentQSQLite, PersistentQStore
from .store.bridge import AsyncStore
from .workers.base import PersistentQInterface, WorkerState
from .workers.cleaner import Cleaner
from .workers.consumer import Consumer
from .workers.producer import Producer

__all__ = [
    "AsyncStore",
    "Cleaner",
    "Config",
    "ConfigError",
    "Consumer",
    "FilePipeline",
    "InvalidStateError",
    "Job",
    "JobNotFoundError",
    "JobState",
    "JobTimeoutError",
    "PayloadTooLargeError",
    "PermanentJobError",
    "PersistentQError",
    "PersistentQInterface",
    "PersistentQSQLite",
    "PersistentQStore",
    "Producer",
    "StoreError",
    "WorkerPool",
    "WorkerProcessError",
    "WorkerState",
    "config_from_dict",
    "load_config",
]
