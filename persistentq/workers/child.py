"""Child process that runs plain `def` functions for SyncRunner, one call at a time.

SyncRunner starts it as ``python -m persistentq.workers.child`` and sends it
frames over stdin; the child replies over stdout. The frames and the reply
tags are described and defined in persistentq.workers.sync_runner.

End of file on stdin stops the child. It exits at once, even in the middle of
a call, because the parent is then closing or gone and will never read a
result. The child ignores SIGINT: Ctrl-C in a terminal reaches the whole
process group, and the parent, not the child, decides what a graceful stop
does to a running call.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import BinaryIO

from persistentq.errors import PermanentJobError
from persistentq.workers.sync_runner import (
    HANDSHAKE_TAG,
    HEADER,
    MAX_FRAME_BYTES,
    REPLY_LOAD_FAILED,
    REPLY_OK,
    REPLY_RAISED,
)

# Exit status of a child whose stdin closed in the middle of a call.
EXIT_PARENT_GONE = 70


def read_frame(stream: BinaryIO) -> bytes | None:
    """Read one frame from a blocking binary stream, or return None at end of file."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None

    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def write_frame(stream: BinaryIO, body: bytes) -> None:
    """Write one frame to a blocking binary stream and flush it."""
    stream.write(HEADER.pack(len(body)))
    stream.write(body)
    stream.flush()


def main() -> None:
    """Serve calls from the parent until stdin reaches end of file."""
    protocol_in, protocol_out = _take_standard_streams()
    # The parent decides what happens to a running call on Ctrl-C or SIGTERM
    # (sent to the whole process group by terminals and service managers), and
    # kills this process itself when the call must not finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM") and sys.platform != "win32":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if not _handshake(protocol_in, protocol_out):
        return

    requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    call_in_progress = threading.Event()
    reader = threading.Thread(
        target=_read_requests,
        args=(protocol_in, requests, call_in_progress),
        name="persistentq-request-reader",
        daemon=True,
    )
    reader.start()
    _serve(requests, call_in_progress, protocol_out)


def _take_standard_streams() -> tuple[BinaryIO, BinaryIO]:
    """Move the protocol pipes off fds 0 and 1 so user code cannot read or corrupt them.

    fd 1 and sys.stdout then write to stderr, so a user's print() shows in the
    parent's terminal, and fd 0 reads from the null device.
    """
    protocol_out = os.fdopen(os.dup(1), "wb")
    protocol_in = os.fdopen(os.dup(0), "rb")

    os.dup2(2, 1)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)

    sys.stdout = open(  # Open for the life of the process.
        1,
        "w",
        buffering=1,
        encoding=sys.stderr.encoding,
        errors=sys.stderr.errors,
        closefd=False,
    )
    return protocol_in, protocol_out


def _handshake(protocol_in: BinaryIO, protocol_out: BinaryIO) -> bool:
    """Adopt the parent's sys.path and working directory, then report ready."""
    body = read_frame(protocol_in)
    if body is None:
        return False

    sys_path, cwd = pickle.loads(body)
    sys.path[:] = sys_path
    os.chdir(cwd)

    write_frame(protocol_out, pickle.dumps((HANDSHAKE_TAG,)))
    return True


def _read_requests(
    stream: BinaryIO,
    requests: queue.SimpleQueue[bytes | None],
    call_in_progress: threading.Event,
) -> None:
    """Pass each request frame to the main thread; exit the process if stdin closes mid-call.

    This thread, not the main one, reads stdin so that the child notices a
    closed pipe while the main thread is busy in a user function. This thread
    sets the flag before it hands over a request, and the main thread clears
    it before it replies. The parent sends the next request only after it has
    read the reply, so the flag is never cleared while a call runs.
    """
    while True:
        body = read_frame(stream)
        if body is None:
            break
        call_in_progress.set()
        requests.put(body)

    if call_in_progress.is_set():
        for stream_to_flush in (sys.stdout, sys.stderr):
            try:
                stream_to_flush.flush()
            except (OSError, ValueError):
                pass  # User code closed or broke the stream, and the child exits anyway.
        os._exit(EXIT_PARENT_GONE)
    requests.put(None)


def _serve(
    requests: queue.SimpleQueue[bytes | None],
    call_in_progress: threading.Event,
    protocol_out: BinaryIO,
) -> None:
    """Run each request in this (main) thread and write its reply."""
    functions: dict[int, Callable[[str], object]] = {}
    while True:
        body = requests.get()
        if body is None:
            return

        key, function_bytes, payload, forget_keys = pickle.loads(body)
        for forgotten in forget_keys:
            functions.pop(forgotten, None)
        reply = _run_request(functions, key, function_bytes, payload)

        call_in_progress.clear()
        try:
            write_frame(protocol_out, reply)
        except OSError:
            return  # The parent closed its end of the pipe and reads nothing more.


def _run_request(
    functions: dict[int, Callable[[str], object]],
    key: int | None,
    function_bytes: bytes | None,
    payload: str,
) -> bytes:
    """Load the function if needed, call it on the payload and return the pickled reply."""
    try:
        function = _load_function(functions, key, function_bytes)
    except BaseException as exc:  # Every failure goes back to the parent.
        return _dump_failure(REPLY_LOAD_FAILED, exc)

    try:
        result = function(payload)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures of the call too.
        return _dump_failure(REPLY_RAISED, exc)
    return _dump_result(result)


def _load_function(
    functions: dict[int, Callable[[str], object]],
    key: int | None,
    function_bytes: bytes | None,
) -> Callable[[str], object]:
    if function_bytes is None:
        return functions[key]  # type: ignore[index]  # The parent sends bytes when key is None.

    function = pickle.loads(function_bytes)
    if key is not None:
        functions[key] = function
    return function


def _dump_result(result: object) -> bytes:
    """Pickle a successful reply, or a REPLY_RAISED reply when the result cannot be sent."""
    try:
        reply = pickle.dumps((REPLY_OK, result), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        reply = _dump_result_by_value(result, exc)

    if len(reply) > MAX_FRAME_BYTES:
        error = ValueError(
            f"the result of type {type(result).__qualname__} is {len(reply)} bytes "
            f"when pickled, more than the {MAX_FRAME_BYTES} bytes one frame can carry"
        )
        return _dump_failure(REPLY_RAISED, error)
    return reply


def _dump_result_by_value(result: object, pickle_error: Exception) -> bytes:
    """Pickle the reply with cloudpickle, which also handles classes defined inside user functions.

    Returns a REPLY_RAISED reply that names ``pickle_error`` when cloudpickle fails too.
    """
    import cloudpickle

    try:
        return cloudpickle.dumps((REPLY_OK, result), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass

    error = pickle.PicklingError(
        f"the result of type {type(result).__qualname__} cannot be pickled to send it "
        f"to the parent process: {type(pickle_error).__name__}: {pickle_error}"
    )
    error.__cause__ = pickle_error
    return _dump_failure(REPLY_RAISED, error)


def _dump_failure(tag: int, exc: BaseException) -> bytes:
    """Pickle a failure reply with the exception's one-line summary and full traceback."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # Start at the user's code, not at _run_request.

    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    traceback_text = "".join(traceback.format_exception(type(exc), exc, tb))
    permanent = isinstance(exc, PermanentJobError) or getattr(exc, "permanent", False) is True
    return pickle.dumps((tag, summary, traceback_text, permanent), protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    main()
