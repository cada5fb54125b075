"""Turning what a notebook user passes (a config, its path, a pool or a store) into a queue to read."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..admin import hooks_for
from ..config import Config, load_config
from ..hooks import JobHooks, NoHooks
from ..pool import WorkerPool
from ..store.base import DEFAULT_QUEUE, PersistentQStore
from ..store.factory import open_store

log = logging.getLogger(__name__)

# The types that the views, the helpers and the panel accept as "the queue".
QueueSource = Union[Config, WorkerPool, PersistentQStore, str, os.PathLike]


@dataclass(frozen=True)
class QueueRef:
    """A store to read, the queue name in it, and the hooks that requeueing its failed jobs needs."""

    store: PersistentQStore
    queue: str
    hooks: JobHooks
    config: Config | None


def as_config(source: Config | str | os.PathLike | None) -> Config:
    """Return `source` if it is a Config, else load the config.yaml at that path.

    None loads ./config.yaml when it exists, else the defaults, as the `basic` command does.
    """
    if source is None:
        config = load_config(None)
        if config.source is None:
            # The defaults run the file pipeline, whose producer writes files into this folder.
            log.warning("no config.yaml in %s: using the built-in defaults, so files and the queue go to %s",
                        Path.cwd(), config.general.primary_path)
        return config
    if isinstance(source, Config):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_config(Path(source))
    raise TypeError(
        "expected a Config or the path of a config.yaml, "
        f"got {type(source).__name__}: {source!r:.80}"
    )


@contextmanager
def open_queue(source: QueueSource, *, queue: str | None = None) -> Iterator[QueueRef]:
    """Yield the queue that `source` names, closing on exit any store opened here.

    A running pool lends its own store. A config, a config path or a stopped
    pool gets a store of its own for the duration. For a config, the hooks of
    the pool that this kernel runs on that queue are used when there is one,
    because its functions may have come from `execute_function` instead of
    the config.
    """
    if isinstance(source, PersistentQStore):
        yield QueueRef(source, queue or DEFAULT_QUEUE, NoHooks(), None)
        return

    from .session import running_pool

    pool = source if isinstance(source, WorkerPool) else running_pool(as_config(source))
    config = pool.config if pool is not None else as_config(source)
    hooks = pool.hooks if pool is not None else hooks_for(config)
    name = queue or config.general.queue
    if pool is not None and pool.running:
        # A pool whose SQLite file was deleted would show work that is lost with the kernel.
        pool.store.check_health()
        yield QueueRef(pool.store, name, hooks, config)
        return

    store = open_store(config)
    try:
        yield QueueRef(store, name, hooks, config)
    finally:
        store.close()
