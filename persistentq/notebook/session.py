"""One worker pool per queue per kernel, so re-running a cell attaches instead of starting more workers.

    pool = await start_pool("config.yaml", consumer_function=work)   # run the cell twice:
    pool = await start_pool("config.yaml", consumer_function=work)   # same pool, same workers

The registry lives in this module, which a kernel imports once, so it lasts
as long as the kernel. A queue is identified by its database and its name.
"""

from __future__ import annotations

import logging
import os

from ..config import Config
from ..pool import WorkerPool
from ..workers.functions import JobFunction, check_function
from .sources import as_config

log = logging.getLogger(__name__)

_pools: dict[tuple[str, str], WorkerPool] = {}


def queue_key(config: Config) -> tuple[str, str]:
    """Return what identifies a queue: its database (file path or URL) and its name."""
    database = str(config.database_path) if config.database_path is not None else config.database_url
    return database, config.general.queue


def running_pool(config: Config) -> WorkerPool | None:
    """Return the pool this kernel holds for the queue of `config`, or None."""
    return _pools.get(queue_key(config))


def pool_for(
    source: Config | WorkerPool | str | os.PathLike | None = None,
    *,
    consumer_function: JobFunction | None = None,
    producer_function: JobFunction | None = None,
) -> WorkerPool:
    """Return this kernel's pool for the queue of `source`, creating it (not started) on first use.

    `source` is a Config, the path of a config.yaml, a WorkerPool, or None
    for ./config.yaml when it exists, else the defaults. When
    this kernel already has a pool for that queue, that pool is returned
    and functions given here replace its functions, so re-running a cell with
    an edited function takes effect from the next job on, while the config
    of the existing pool is kept. A WorkerPool passed
    in while another pool on its queue is running is not started: the
    running one is returned, with the new pool's functions.
    """
    if isinstance(source, WorkerPool):
        return _adopt(source)

    config = as_config(source)
    key = queue_key(config)
    pool = _pools.get(key)
    if pool is None:
        pool = WorkerPool(config, consumer_function=consumer_function, producer_function=producer_function)
        _pools[key] = pool
        return pool
    replace_functions(pool, consumer_function=consumer_function, producer_function=producer_function)
    return pool


def _adopt(pool: WorkerPool) -> WorkerPool:
    key = queue_key(pool.config)
    known = _pools.get(key)
    if known is None or known is pool or not known.running:
        _pools[key] = pool
        return pool
    log.info("queue %r already has a running pool in this kernel; using it", pool.config.general.queue)
    replace_functions(
        known, consumer_function=_own_function(pool, pool.consumer_function),
        producer_function=_own_function(pool, pool.producer_function),
    )
    return known


def _own_function(pool: WorkerPool, function: JobFunction) -> JobFunction | None:
    """Return `function` unless it is the file pipeline's default, which the pool did not get from its user."""
    return None if getattr(function, "__self__", None) is pool.pipeline else function


def replace_functions(
    pool: WorkerPool,
    *,
    consumer_function: JobFunction | None = None,
    producer_function: JobFunction | None = None,
) -> None:
    """Make `pool` and its running workers use new functions. None keeps the current one.

    NOTE: the job hooks stay those the pool was built with, so a pool built
    for the file pipeline keeps renaming `.failed` files after its consumer
    function is replaced.
    """
    if consumer_function is not None and consumer_function is not pool.consumer_function:
        pool.consumer_function = check_function(consumer_function)
        for consumer in pool.consumers:
            consumer.execute_function(consumer_function)
        log.info("consumers of queue %r now run %s", pool.config.general.queue, _name(consumer_function))
    if producer_function is not None and producer_function is not pool.producer_function:
        pool.producer_function = check_function(producer_function)
        for producer in pool.producers:
            producer.execute_function(producer_function)
        log.info("producers of queue %r now run %s", pool.config.general.queue, _name(producer_function))


async def start_pool(
    source: Config | WorkerPool | str | os.PathLike | None = None,
    *,
    consumer_function: JobFunction | None = None,
    producer_function: JobFunction | None = None,
) -> WorkerPool:
    """Start this kernel's pool for the queue of `source`, or return it if it runs already."""
    pool = pool_for(source, consumer_function=consumer_function, producer_function=producer_function)
    await pool.start()
    return pool


async def stop_pools(grace_s: float | None = None) -> None:
    """Stop every running pool of this kernel, gracefully."""
    for pool in list(_pools.values()):
        if pool.running:
            await pool.stop(grace_s)


def pools() -> list[WorkerPool]:
    """Return the pools this kernel holds, running or not."""
    return list(_pools.values())


def _name(function: JobFunction) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
