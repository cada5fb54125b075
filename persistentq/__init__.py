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

import importlib
from typing import Any

# The module of each public name. Names are imported on first use, so a child
# process that runs sync functions, or `basic --help`, starts without loading
# the whole package.
_EXPORTS = {
    "AsyncStore": "persistentq.store.bridge",
    "Cleaner": "persistentq.workers.cleaner",
    "Config": "persistentq.config",
    "ConfigError": "persistentq.errors",
    "DatabaseUnavailableError": "persistentq.errors",
    "Consumer": "persistentq.workers.consumer",
    "FilePipeline": "persistentq.files",
    "InvalidPayloadError": "persistentq.errors",
    "InvalidStateError": "persistentq.errors",
    "Job": "persistentq.store.base",
    "JobNotFoundError": "persistentq.errors",
    "JobState": "persistentq.store.base",
    "JobTimeoutError": "persistentq.errors",
    "PayloadTooLargeError": "persistentq.errors",
    "PermanentJobError": "persistentq.errors",
    "PersistentQError": "persistentq.errors",
    "PersistentQInterface": "persistentq.workers.base",
    "PersistentQPostgres": "persistentq.store.postgres",
    "PersistentQSQLite": "persistentq.store.sqlite",
    "PersistentQStore": "persistentq.store.base",
    "Producer": "persistentq.workers.producer",
    "StoreError": "persistentq.errors",
    "WorkerPool": "persistentq.pool",
    "WorkerProcessError": "persistentq.errors",
    "WorkerState": "persistentq.workers.base",
    "config_from_dict": "persistentq.config",
    "load_config": "persistentq.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persistentq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
