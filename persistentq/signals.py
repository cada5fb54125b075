"""Stop a running pool on Ctrl-C, SIGTERM or SIGHUP, as `basic run` and `basic web-app` do.

    stop = asyncio.Event()
    install_stop_handlers(pool, stop)
    await pool.run(stop=stop)

The first signal sets `stop`, so the caller stops the pool gracefully. A
second one calls `pool.hurry()`, which hands running jobs back to the queue at
once instead of waiting for `general.shutdown_grace`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import WorkerPool

log = logging.getLogger(__name__)

# SIGHUP comes when the terminal closes: it stops as gracefully as Ctrl-C.
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


def install_stop_handlers(pool: WorkerPool, stop: asyncio.Event) -> None:
    """Make STOP_SIGNALS set `stop` the first time and hurry the pool's stop after that.

    Call it from the running loop. On Windows, which has no asyncio signal
    handlers, nothing is installed and Ctrl-C raises KeyboardInterrupt.
    """
    loop = asyncio.get_running_loop()
    grace_s = pool.config.general.shutdown_grace

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("%s again: handing running jobs back now", name)
            pool.hurry()
            return
        log.info("%s: stopping (running jobs get %g s to finish; press Ctrl-C again to hand them back now)",
                 name, grace_s)
        stop.set()

    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
        except (NotImplementedError, RuntimeError):
            pass
