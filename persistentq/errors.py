"""Exceptions raised by persistentq: one base class and a few precise subclasses."""

from __future__ import annotations


class PersistentQError(Exception):
    """Base class of every error that persistentq raises on purpose."""


class ConfigError(PersistentQError, ValueError):
    """A config file or value is invalid; raised before any job is touched."""


class StoreError(PersistentQError):
    """The queue database cannot be used (version too old, network filesystem, driver failure)."""


class DatabaseUnavailableError(StoreError):
    """The database server cannot be reached, or its URL is invalid."""


class InvalidPayloadError(PersistentQError, ValueError):
    """A payload cannot be stored as given."""


class PayloadTooLargeError(InvalidPayloadError):
    """A payload is longer than the store accepts."""


class JobNotFoundError(PersistentQError, LookupError):
    """No job has the given id."""


class InvalidStateError(PersistentQError):
    """The job is not in a state that allows the requested operation."""


class JobTimeoutError(PersistentQError, TimeoutError):
    """An attempt ran past `consumer.n_time` and was stopped."""


class WorkerProcessError(PersistentQError):
    """The child process running a sync function died before it returned a result."""


class PermanentJobError(PersistentQError):
    """Raise it from a consumer function to fail the job at once, without further attempts."""
