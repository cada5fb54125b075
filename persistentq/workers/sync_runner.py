"""Run plain `def` functions in long-lived child processes that can be killed at a time limit.

A thread cannot be stopped from outside in CPython, so a blocking function
that must obey ``consumer.n_time`` runs in a child process. Children start
with ``python -m persistentq.workers.child`` (no fork, no SIGALRM, no
multiprocessing spawn, which would re-import the parent's ``__main__``) and
live until they are killed at a time limit, die, or are stopped. Functions
travel by value with cloudpickle, so a function defined in a notebook cell
works. Each function is pickled once and sent once to each child.

Usage::

    runner = SyncRunner(max_children=2)
    try:
        result = await runner.run(process_file, "a1b2c3d4e5", timeout_s=3600)
    finally:
        await runner.aclose()
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import pickle
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import cloudpickle

from persistentq.errors import JobTimeoutError, PersistentQError, WorkerProcessError

logger = logging.getLogger(__name__)

CHILD_MODULE = "persistentq.workers.child"

# Children get a process group of their own: Ctrl-C in a terminal, or a signal
# to the whole group, then reaches only the parent, which decides whether a
# running call finishes or is handed back. A child still starting up would
# otherwise die of it before it can ignore the signal.
if sys.platform == "win32":
    _OWN_PROCESS_GROUP: dict = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    _OWN_PROCESS_GROUP = {"start_new_session": True}

# The folder that contains the persistentq package. Children start there, so
# `python -m` finds this same copy of the package even when it is not
# installed. Each child then switches to the parent's sys.path and cwd.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]

# The wire protocol between SyncRunner and persistentq.workers.child. Every
# message is a frame: a 4-byte big-endian length, then that many bytes of pickle.
#
# 1. The parent sends (sys_path, cwd). The child adopts both, so functions that
#    the parent pickled by reference (module:function) import there too, and
#    replies (HANDSHAKE_TAG,).
# 2. For each call the parent sends (key, function_bytes, payload, forget_keys).
#    function_bytes is the cloudpickle of the function, or None when that child
#    has already loaded key. key is None for a function that the parent cannot
#    cache, and the child then loads it for that call only. forget_keys lists
#    functions that the parent no longer holds.
# 3. The child replies (REPLY_OK, result), or (REPLY_RAISED, summary,
#    traceback_text, permanent) when the function raised or its result cannot
#    be pickled, or (REPLY_LOAD_FAILED, summary, traceback_text, permanent) when
#    the function could not be unpickled, so the child did not cache it.
#    permanent is True for a PermanentJobError or an exception whose
#    `permanent` attribute is True.
HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 2**32 - 1
HANDSHAKE_TAG = "persistentq.workers.child ready"
REPLY_OK = 0
REPLY_RAISED = 1
REPLY_LOAD_FAILED = 2

# Seconds a child gets to exit after its stdin is closed before it is killed.
STOP_GRACE_S = 2.0

# A handshake reply is a few dozen bytes. A longer length means that something
# printed to stdout before the child moved the protocol off fd 1.
_MAX_HANDSHAKE_BYTES = 4096


class RemoteError(PersistentQError):
    """The function raised in the child process, or its result could not be sent back.

    ``str()`` is the child's one-line summary, such as ``ValueError: bad
    payload``, and ``traceback_text`` is the child's full formatted traceback.
    ``permanent`` is True when the child's exception was a PermanentJobError
    or had a ``permanent`` attribute set to True, so the job should not be
    retried.
    """

    def __init__(self, summary: str, traceback_text: str, permanent: bool = False) -> None:
        super().__init__(summary)
        self.traceback_text = traceback_text
        self.permanent = permanent

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, bool]]:
        return type(self), (str(self), self.traceback_text, self.permanent)


class SyncRunner:
    """Runs plain `def` functions in long-lived child processes; one child runs one call at a time.

    Use one runner from one event loop thread. Calls beyond ``max_children``
    wait, in arrival order, for a child to become free.
    """

    def __init__(self, max_children: int = 1, *, start_timeout_s: float = 30.0) -> None:
        _check_max_children(max_children)
        if not start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be a number of seconds > 0, got {start_timeout_s!r}")

        self._max_children = max_children
        self._start_timeout_s = start_timeout_s
        self._functions = _PickledFunctions()
        self._children: set[_Child] = set()  # alive or starting, idle or busy
        self._idle: list[_Child] = []  # the most recently used last
        self._n_slots_taken = 0  # calls that may use a child, whether or not they have one yet
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stop_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<SyncRunner max_children={self._max_children} children={len(self._children)} "
            f"idle={len(self._idle)} calls={self._n_slots_taken} waiting={len(self._waiters)} "
            f"closed={self._closed}>"
        )

    @property
    def max_children(self) -> int:
        """Maximum number of child processes, and so of calls that run at once."""
        return self._max_children

    @property
    def n_children(self) -> int:
        """Number of child processes alive now, idle or busy."""
        return sum(1 for child in self._children if child.process.returncode is None)

    def child_pids(self) -> list[int]:
        """Return the process ids of the children alive now, idle or busy."""
        return [child.process.pid for child in self._children if child.process.returncode is None]

    async def run(self, fn: Callable[[str], object], payload: str, *, timeout_s: float) -> object:
        """Call ``fn(payload)`` in a child process and return its result.

        Raises:
            JobTimeoutError: the call ran past ``timeout_s`` seconds. The child
                was killed and has exited. A new one starts on a later call.
            RemoteError: ``fn`` raised, or could not be loaded in the child, or
                its result could not be pickled.
            WorkerProcessError: the child died during the call, or failed to start.
            TypeError: ``fn`` is not callable or cannot be pickled.
            ValueError: ``timeout_s`` is not > 0.
            RuntimeError: the runner is closed.

        If the awaiting task is cancelled, the child running the call is
        killed before CancelledError propagates.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        self._check_open()
        self._bind_loop()
        key, function_bytes = self._functions.get(fn)

        await self._take_slot()
        child: _Child | None = None
        reusable = False
        try:
            self._check_open()
            child = await self._take_child()
            request = self._build_request(child, key, function_bytes, payload)
            reply = await _call(child, request, timeout_s, fn)
            reusable = True
        finally:
            self._give_back(child, reusable=reusable)
        assert child is not None  # The try block assigns it before it can finish.
        return child.unpack_reply(reply, key, fn)

    def resize(self, max_children: int) -> None:
        """Set the maximum number of children; idle children beyond it are stopped now.

        Busy children beyond the new maximum are stopped when their call ends.
        Waiting calls start at once if the maximum grew. With 0, calls wait
        until a later resize allows children again.
        """
        _check_max_children(max_children)
        self._max_children = max_children

        while self._idle and len(self._children) > max_children:
            self._discard(self._idle.pop(0))
        self._wake_waiters()

    async def aclose(self) -> None:
        """Stop every child: close its stdin, then kill it if it has not exited after STOP_GRACE_S.

        Calls in progress raise WorkerProcessError and waiting calls raise
        RuntimeError. Calling aclose again does nothing more.
        """
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("SyncRunner was closed while the call waited for a child"))

        children = list(self._children)
        self._children.clear()
        self._idle.clear()
        for child in children:
            child.stopped_by_runner = True
        await asyncio.gather(*(_stop(child) for child in children), *self._stop_tasks)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("SyncRunner is closed; create a new one to run more calls")

    def _bind_loop(self) -> None:
        """Remember the running loop, because the child processes' pipes belong to it."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("SyncRunner is used from a second event loop; create one runner per loop")

    async def _take_slot(self) -> None:
        """Wait until this call may use a child, first come first served."""
        if not self._waiters and self._n_slots_taken < self._max_children:
            self._n_slots_taken += 1
            return

        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # _wake_waiters gave this call a slot just before the cancellation.
                self._n_slots_taken -= 1
                self._wake_waiters()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        while self._waiters and self._n_slots_taken < self._max_children:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._n_slots_taken += 1
                waiter.set_result(None)

    async def _take_child(self) -> _Child:
        """Return the most recently used idle child, or start a new one."""
        while self._idle:
            child = self._idle.pop()
            if child.process.returncode is None:
                return child
            logger.warning(
                "sync child process %d exited with code %s while idle; starting a new one",
                child.process.pid,
                child.process.returncode,
            )
            self._children.discard(child)

        child = await _start_child(self._start_timeout_s, self._children)
        return child

    def _give_back(self, child: _Child | None, *, reusable: bool) -> None:
        """Free the call's slot; keep the child for later calls or stop it."""
        self._n_slots_taken -= 1
        if child is not None:
            keep = (
                reusable
                and not self._closed
                and child in self._children
                and len(self._children) <= self._max_children
            )
            if keep:
                self._idle.append(child)
            else:
                self._discard(child)
        self._wake_waiters()

    def _discard(self, child: _Child) -> None:
        """Forget a child and, if it still runs, stop it in the background."""
        self._children.discard(child)
        if child.process.returncode is not None or self._loop is None:
            return

        child.stopped_by_runner = True
        task = self._loop.create_task(_stop(child), name=f"persistentq-stop-child-{child.process.pid}")
        self._stop_tasks.add(task)
        task.add_done_callback(self._stop_tasks.discard)

    def _build_request(self, child: _Child, key: int | None, function_bytes: bytes, payload: str) -> bytes:
        forget_keys = self._functions.collect_forgotten(child, self._children)
        sent_bytes = None if key in child.loaded_keys else function_bytes
        request = (key, sent_bytes, payload, forget_keys)
        return pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)


async def _call(child: _Child, request: bytes, timeout_s: float, fn: Callable[[str], object]) -> tuple[object, ...]:
    """Send one call to the child and return its reply, killing the child at the time limit."""
    timer = asyncio.get_running_loop().call_later(timeout_s, child.kill_for_timeout)
    try:
        reply = await child.exchange(request)
    except asyncio.CancelledError:
        logger.info(
            "Killing sync child process %d: the call to %s was cancelled", child.process.pid, _name(fn)
        )
        await child.kill_and_wait()
        raise
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        # The child has exited or is exiting, killed by the timer or on its own.
        # Wait before any kill: Popen.kill() polls the pid and could collect the
        # exit status before asyncio's child watcher, which then reports 255.
        await _stop(child)
        raise _child_lost_error(child, fn, timeout_s) from exc
    finally:
        timer.cancel()

    if child.timed_out:
        # The timer fired after the reply arrived but before this task resumed,
        # so the child has been killed already.
        await _stop(child)
        raise _child_lost_error(child, fn, timeout_s)
    return reply


class _Child:
    """One child process and the keys of the functions it has loaded."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.loaded_keys: set[int] = set()
        self.forget_keys: list[int] = []  # dead functions to drop on the next request
        self.timed_out = False
        self.stopped_by_runner = False  # The runner closed its stdin on purpose (aclose, resize).

    async def exchange(self, request: bytes) -> tuple[object, ...]:
        """Send one frame and return the unpickled reply frame.

        Raises IncompleteReadError or ConnectionError when the child exits.
        """
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None  # Both are pipes, see _start_child.
        stdin.write(HEADER.pack(len(request)) + request)
        await stdin.drain()

        header = await stdout.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        body = await stdout.readexactly(size)
        return _loads_reply(body)

    def kill_for_timeout(self) -> None:
        """Mark the call as timed out and kill the child; the call's timer runs this."""
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        try:
            self.process.kill()
        except ProcessLookupError:
            pass  # It has exited already.

    async def kill_and_wait(self) -> None:
        """Kill the process and wait until it has exited, so that it can no longer run anything."""
        self.kill()
        await self.process.wait()

    def unpack_reply(self, reply: tuple[object, ...], key: int | None, fn: Callable[[str], object]) -> object:
        """Return the result from a reply, or raise the RemoteError that it describes."""
        tag = reply[0]
        if tag == REPLY_OK:
            if key is not None:
                self.loaded_keys.add(key)
            return reply[1]

        summary, traceback_text, permanent = str(reply[1]), str(reply[2]), bool(reply[3])
        if tag == REPLY_RAISED:
            if key is not None:
                self.loaded_keys.add(key)
            raise RemoteError(summary, traceback_text, permanent)

        if key is not None:
            self.loaded_keys.discard(key)
        summary = f"{_name(fn)} could not be loaded in the child process: {summary}"
        raise RemoteError(summary, traceback_text, permanent)


class _PickledFunctions:
    """The cloudpickle bytes of each function, made once per function object.

    Each function gets a serial key, never reused, so a child cannot confuse
    a new function with a dead one that had the same id(). When a function
    object is garbage collected, its key is queued so that children drop
    their copy. The weakref callback may run in any thread, so it only
    appends to a deque; the event loop thread does the rest.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Callable[[str], object]], int, bytes]] = {}
        self._serials = itertools.count(1)
        self._dead_keys: collections.deque[int] = collections.deque()

    def get(self, fn: Callable[[str], object]) -> tuple[int | None, bytes]:
        """Return the function's key and pickle; the key is None when fn allows no weak reference."""
        entry = self._entries.get(id(fn))
        if entry is not None and entry[0]() is fn:
            return entry[1], entry[2]

        function_bytes = _pickle_function(fn)
        key = next(self._serials)
        try:
            ref = weakref.ref(fn, self._make_callback(id(fn), key))
        except TypeError:
            # NOTE: such callables (method descriptors like str.upper, instances of
            # classes with __slots__ and no __weakref__) are pickled on every call.
            return None, function_bytes
        self._entries[id(fn)] = (ref, key, function_bytes)
        return key, function_bytes

    def collect_forgotten(self, child: _Child, children: set[_Child]) -> tuple[int, ...]:
        """Return the keys of dead functions that this child should drop from its cache."""
        while self._dead_keys:
            key = self._dead_keys.popleft()
            for other in children:
                if key in other.loaded_keys:
                    other.loaded_keys.discard(key)
                    other.forget_keys.append(key)

        if not child.forget_keys:
            return ()
        forget_keys = tuple(child.forget_keys)
        child.forget_keys.clear()
        return forget_keys

    def _make_callback(self, fn_id: int, key: int) -> Callable[[object], None]:
        def forget(_ref: object) -> None:
            entry = self._entries.get(fn_id)
            if entry is not None and entry[1] == key:
                del self._entries[fn_id]
            self._dead_keys.append(key)

        return forget


async def _start_child(start_timeout_s: float, children: set[_Child]) -> _Child:
    """Start a child process, add it to ``children`` and wait for its handshake.

    Raises WorkerProcessError when the child exits or stays silent for
    ``start_timeout_s``. The child is then killed and removed from ``children``.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=_PACKAGE_PARENT,
        **_OWN_PROCESS_GROUP,
    )
    child = _Child(process)
    children.add(child)
    try:
        await asyncio.wait_for(_handshake(child), start_timeout_s)
    except asyncio.TimeoutError as exc:
        children.discard(child)
        await child.kill_and_wait()
        raise WorkerProcessError(
            f"sync child process {process.pid} did not start within start_timeout_s={start_timeout_s:g} s"
        ) from exc
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        children.discard(child)
        await _stop(child)
        raise WorkerProcessError(
            f"sync child process {process.pid} exited with code {process.returncode} "
            "during start-up. Its stderr, which it shares with this process, shows the reason"
        ) from exc
    except BaseException:
        children.discard(child)
        await child.kill_and_wait()
        raise

    logger.debug("Started sync child process %d", process.pid)
    return child


async def _handshake(child: _Child) -> None:
    """Send the parent's sys.path and cwd, then check the child's reply."""
    stdin, stdout = child.process.stdin, child.process.stdout
    assert stdin is not None and stdout is not None  # Both are pipes, see _start_child.
    request = pickle.dumps((list(sys.path), os.getcwd()), protocol=pickle.HIGHEST_PROTOCOL)
    stdin.write(HEADER.pack(len(request)) + request)
    await stdin.drain()

    header = await stdout.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > _MAX_HANDSHAKE_BYTES:
        raise WorkerProcessError(
            f"sync child process {child.process.pid} wrote {header!r} to stdout instead of the "
            "protocol handshake. Something printed to stdout while the child imported persistentq"
        )

    reply = _loads_reply(await stdout.readexactly(size))
    if reply != (HANDSHAKE_TAG,):
        raise WorkerProcessError(f"sync child process {child.process.pid} sent an invalid handshake: {reply!r}")


async def _stop(child: _Child) -> None:
    """Close the child's stdin so that it exits; kill it if it is still running after STOP_GRACE_S."""
    stdin = child.process.stdin
    if stdin is not None and not stdin.is_closing():
        stdin.close()

    try:
        await asyncio.wait_for(child.process.wait(), STOP_GRACE_S)
    except asyncio.TimeoutError:
        logger.warning(
            "Killing sync child process %d: still running %g s after its stdin closed",
            child.process.pid,
            STOP_GRACE_S,
        )
        await child.kill_and_wait()
    else:
        logger.debug("sync child process %d exited with code %s", child.process.pid, child.process.returncode)


def _loads_reply(body: bytes) -> tuple[object, ...]:
    """Unpickle a reply frame; a result that cannot be unpickled here becomes a REPLY_RAISED reply."""
    try:
        return pickle.loads(body)
    except Exception as exc:
        summary = f"the result cannot be unpickled in the parent process: {type(exc).__name__}: {exc}"
        return (REPLY_RAISED, summary, summary, False)


def _child_lost_error(child: _Child, fn: Callable[[str], object], timeout_s: float) -> PersistentQError:
    if child.timed_out:
        logger.info(
            "Killed sync child process %d: %s timed out after %g s",
            child.process.pid,
            _name(fn),
            timeout_s,
        )
        return JobTimeoutError(
            f"{_name(fn)} timed out after {timeout_s:g} s, the n_time limit, "
            f"so sync child process {child.process.pid} was killed"
        )

    if child.stopped_by_runner:
        return WorkerProcessError(
            f"sync child process {child.process.pid} was stopped by SyncRunner.aclose() "
            f"while running {_name(fn)}, before it returned a result"
        )

    logger.warning(
        "sync child process %d exited with code %s while running %s",
        child.process.pid,
        child.process.returncode,
        _name(fn),
    )
    return WorkerProcessError(
        f"sync child process {child.process.pid} exited with code {child.process.returncode} "
        f"while running {_name(fn)}, before it returned a result"
    )


def _pickle_function(fn: Callable[[str], object]) -> bytes:
    try:
        return cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"{_name(fn)} cannot be sent to a child process because cloudpickle failed to pickle it: "
            f"{type(exc).__name__}: {exc}. Create objects such as locks, open files and "
            "connections inside the function, or set consumer.sync_mode: thread"
        ) from exc


def _check_max_children(max_children: int) -> None:
    if isinstance(max_children, bool) or not isinstance(max_children, int):
        raise TypeError(f"max_children must be an int, got {max_children!r}")
    if max_children < 0:
        raise ValueError(f"max_children must be >= 0, got {max_children}")


def _name(fn: Callable[[str], object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
