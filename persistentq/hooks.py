"""Job hooks: what a job's outside leftovers need when it fails, is requeued or is cleaned."""

from __future__ import annotations

from typing import Protocol


class JobHooks(Protocol):
    """Callbacks on a job's payload; every method may be slow (file I/O) and runs off the event loop."""

    def on_failed(self, payload: str) -> None:
        """Run after the queue failed a job for good."""

    def before_requeue(self, payload: str) -> None:
        """Run before a failed job is queued again; raise to reject the requeue."""

    def discard(self, payload: str) -> None:
        """Remove what a failed job left behind; the cleaner calls it once per failed job."""


class NoHooks:
    """Hooks for jobs that leave nothing outside the queue."""

    def on_failed(self, payload: str) -> None:
        pass

    def before_requeue(self, payload: str) -> None:
        pass

    def discard(self, payload: str) -> None:
        pass
