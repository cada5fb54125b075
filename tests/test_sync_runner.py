"""Tests of SyncRunner against real child processes: results, errors, time limits, kills and reuse."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from persistentq.errors import JobTimeoutError, PermanentJobError, WorkerProcessError
from persistentq.workers.sync_runner import RemoteError, SyncRunner

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]

# SIGKILL does not exist on Windows, where os.kill() with SIGTERM calls TerminateProcess.
KILL_SIGNAL = getattr(signal, "SIGKILL", signal.SIGTERM)

# Functions at module level travel by reference: the child imports this test
# module through the sys.path that the parent sends it.


def get_pid(_payload: str) -> int:
    return os.getpid()


def get_cwd(_payload: str) -> str:
    return os.getcwd()


def raise_value_error(payload: str) -> None:
    raise ValueError(f"bad payload {payload!r}")


def raise_permanent_error(payload: str) -> None:
    raise PermanentJobError(f"cannot handle {payload!r}")


def exit_hard(_payload: str) -> None:
    os._exit(3)


def raise_system_exit(_payload: str) -> None:
    sys.exit(3)


def sleep_half_second(_payload: str) -> int:
    time.sleep(0.5)
    return os.getpid()


def sleep_a_minute(_payload: str) -> None:
    time.sleep(60)


def mark_and_sleep(marker_path: str) -> None:
    """Write this pid to the marker file so that the test can see the call started, then block."""
    Path(marker_path).write_text(str(os.getpid()))
    time.sleep(60)


def return_lock(_payload: str) -> object:
    return threading.Lock()


def pid_exists(pid: int) -> bool:
    """Return whether a process with this pid is running; never sends it a signal that stops it.

    A zombie, which has exited but was not yet reaped by its new parent, counts as not running.
    """
    if sys.platform == "win32":
        return _windows_pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # No procfs (macOS) or the process is gone.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state == "Z"


def _windows_pid_exists(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    process_query_limited_information = 0x1000
    still_active = 259
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return False
    try:
        exit_code = wintypes.DWORD()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(exit_code))
        return exit_code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout_s``.

    The child processes cannot set an asyncio.Event in the parent, so this polls.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def wait_for_marker(marker: Path) -> int:
    """Wait until mark_and_sleep has created ``marker``; return the pid written in it."""
    await wait_until(lambda: marker.exists() and marker.read_text() != "")
    return int(marker.read_text())


def run_with_runner(body: Callable[[SyncRunner], Awaitable[T]], max_children: int = 1) -> T:
    """Run ``body(runner)`` in a fresh event loop and close the runner afterwards."""

    async def main() -> T:
        runner = SyncRunner(max_children)
        try:
            return await body(runner)
        finally:
            await runner.aclose()

    return asyncio.run(main())


def test_run_returns_result() -> None:
    async def body(runner: SyncRunner) -> None:
        assert await runner.run(str.upper, "abc", timeout_s=30) == "ABC"
        child_pid = await runner.run(get_pid, "", timeout_s=30)
        assert child_pid != os.getpid()
        assert runner.child_pids() == [child_pid]

    run_with_runner(body)


def test_run_raising_fn_raises_remote_error() -> None:
    async def body(runner: SyncRunner) -> None:
        with pytest.raises(RemoteError) as excinfo:
            await runner.run(raise_value_error, "x1", timeout_s=30)

        error = excinfo.value
        assert str(error) == "ValueError: bad payload 'x1'"
        assert error.traceback_text.startswith("Traceback (most recent call last):")
        assert "in raise_value_error" in error.traceback_text
        assert error.traceback_text.rstrip().endswith("ValueError: bad payload 'x1'")
        assert error.permanent is False
        copy = pickle.loads(pickle.dumps(error))
        assert str(copy) == str(error)
        assert copy.traceback_text == error.traceback_text

    run_with_runner(body)


def test_run_permanent_error_is_marked() -> None:
    async def body(runner: SyncRunner) -> None:
        with pytest.raises(RemoteError) as excinfo:
            await runner.run(raise_permanent_error, "x1", timeout_s=30)

        error = excinfo.value
        assert error.permanent is True
        assert "PermanentJobError: cannot handle 'x1'" in str(error)
        assert pickle.loads(pickle.dumps(error)).permanent is True

    run_with_runner(body)


def test_run_system_exit_is_remote_error() -> None:
    """SystemExit in fn is a failed call, and the child stays alive for the next one."""

    async def body(runner: SyncRunner) -> None:
        pid = await runner.run(get_pid, "", timeout_s=30)
        with pytest.raises(RemoteError, match="^SystemExit: 3$"):
            await runner.run(raise_system_exit, "", timeout_s=30)
        assert await runner.run(get_pid, "", timeout_s=30) == pid

    run_with_runner(body)


def test_run_closure_sent_by_value() -> None:
    """A function defined inside a function, which no child can import, still runs."""
    suffix = "-done"

    def append_suffix(payload: str) -> str:
        return payload + suffix

    async def body(runner: SyncRunner) -> None:
        assert await runner.run(append_suffix, "job", timeout_s=30) == "job-done"

    run_with_runner(body)


def test_run_uses_parent_path_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child imports this test module by reference and works in the parent's cwd."""
    monkeypatch.chdir(tmp_path)

    async def body(runner: SyncRunner) -> None:
        assert await runner.run(get_cwd, "", timeout_s=30) == os.getcwd()

    run_with_runner(body)


def test_run_unimportable_function_raises_remote_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function pickled by reference from a module the child cannot import fails that call only."""
    module_path = tmp_path / "pq_not_on_sys_path.py"
    module_path.write_text("def shout(payload):\n    return payload.upper()\n")
    spec = importlib.util.spec_from_file_location("pq_not_on_sys_path", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pq_not_on_sys_path", module)

    async def body(runner: SyncRunner) -> None:
        pid = await runner.run(get_pid, "", timeout_s=30)
        with pytest.raises(RemoteError, match="could not be loaded in the child process"):
            await runner.run(module.shout, "a", timeout_s=30)
        assert await runner.run(get_pid, "", timeout_s=30) == pid

    run_with_runner(body)


def test_run_unpicklable_result_raises_remote_error() -> None:
    async def body(runner: SyncRunner) -> None:
        pid = await runner.run(get_pid, "", timeout_s=30)
        with pytest.raises(RemoteError, match="cannot be pickled"):
            await runner.run(return_lock, "", timeout_s=30)
        assert await runner.run(get_pid, "", timeout_s=30) == pid

    run_with_runner(body)


def test_run_unpicklable_function_raises_type_error() -> None:
    lock = threading.Lock()

    def use_lock(payload: str) -> str:
        with lock:
            return payload

    async def body(runner: SyncRunner) -> None:
        with pytest.raises(TypeError, match="cannot be sent to a child process"):
            await runner.run(use_lock, "", timeout_s=30)

    run_with_runner(body)


def test_timeout_kills_child() -> None:
    async def body(runner: SyncRunner) -> None:
        pid = await runner.run(get_pid, "", timeout_s=30)
        started = time.monotonic()
        with pytest.raises(JobTimeoutError, match="timed out after 1 s"):
            await runner.run(sleep_a_minute, "", timeout_s=1)
        elapsed_s = time.monotonic() - started

        assert elapsed_s < 3
        assert not pid_exists(pid)
        assert runner.n_children == 0

    run_with_runner(body)


def test_call_after_timeout_gets_new_child() -> None:
    async def body(runner: SyncRunner) -> None:
        first_pid = await runner.run(get_pid, "", timeout_s=30)
        with pytest.raises(JobTimeoutError):
            await runner.run(sleep_a_minute, "", timeout_s=0.5)

        second_pid = await runner.run(get_pid, "", timeout_s=30)
        assert second_pid != first_pid
        assert runner.n_children == 1

    run_with_runner(body)


def test_os_exit_raises_worker_process_error() -> None:
    async def body(runner: SyncRunner) -> None:
        first_pid = await runner.run(get_pid, "", timeout_s=30)
        with pytest.raises(WorkerProcessError, match="exited with code 3"):
            await runner.run(exit_hard, "", timeout_s=30)
        assert not pid_exists(first_pid)

        second_pid = await runner.run(get_pid, "", timeout_s=30)
        assert second_pid != first_pid

    run_with_runner(body)


def test_external_kill_raises_worker_error(tmp_path: Path) -> None:
    marker = tmp_path / "started"

    async def body(runner: SyncRunner) -> None:
        call = asyncio.create_task(runner.run(mark_and_sleep, str(marker), timeout_s=60))
        pid = await wait_for_marker(marker)
        os.kill(pid, KILL_SIGNAL)

        with pytest.raises(WorkerProcessError):
            await asyncio.wait_for(call, 10)
        assert await runner.run(get_pid, "", timeout_s=30) != pid

    run_with_runner(body)


def test_idle_child_killed_is_replaced() -> None:
    """A child that died while idle is replaced without failing the next call."""

    async def body(runner: SyncRunner) -> None:
        pid = await runner.run(get_pid, "", timeout_s=30)
        os.kill(pid, KILL_SIGNAL)
        await wait_until(lambda: runner.n_children == 0)

        assert await runner.run(get_pid, "", timeout_s=30) != pid

    run_with_runner(body)


def test_cancel_kills_child(tmp_path: Path) -> None:
    marker = tmp_path / "started"

    async def body(runner: SyncRunner) -> None:
        call = asyncio.create_task(runner.run(mark_and_sleep, str(marker), timeout_s=60))
        pid = await wait_for_marker(marker)
        call.cancel()

        with pytest.raises(asyncio.CancelledError):
            await call
        assert not pid_exists(pid)
        assert runner.n_children == 0

    run_with_runner(body)


def test_cancel_waiting_call_frees_slot(tmp_path: Path) -> None:
    """A call cancelled while it waits for a child leaves the slot free for later calls."""
    marker = tmp_path / "started"

    async def body(runner: SyncRunner) -> None:
        running = asyncio.create_task(runner.run(mark_and_sleep, str(marker), timeout_s=1.5))
        await wait_for_marker(marker)
        waiting = asyncio.create_task(runner.run(get_pid, "", timeout_s=30))
        await asyncio.sleep(0)  # Let the second call queue up behind the first.
        waiting.cancel()

        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(JobTimeoutError):
            await running
        assert isinstance(await asyncio.wait_for(runner.run(get_pid, "", timeout_s=30), 10), int)

    run_with_runner(body)


def test_two_children_run_concurrently() -> None:
    async def body(runner: SyncRunner) -> None:
        await asyncio.gather(*(runner.run(get_pid, "", timeout_s=30) for _ in range(2)))
        assert runner.n_children == 2

        started = time.monotonic()
        pids = await asyncio.gather(*(runner.run(sleep_half_second, "", timeout_s=30) for _ in range(2)))
        elapsed_s = time.monotonic() - started

        assert elapsed_s < 0.9
        assert len(set(pids)) == 2

    run_with_runner(body, max_children=2)


def test_one_child_runs_calls_in_turn() -> None:
    async def body(runner: SyncRunner) -> None:
        await runner.run(get_pid, "", timeout_s=30)

        started = time.monotonic()
        pids = await asyncio.gather(*(runner.run(sleep_half_second, "", timeout_s=30) for _ in range(2)))
        elapsed_s = time.monotonic() - started

        assert elapsed_s >= 0.9  # Two 0.5 s calls in turn, with room for a coarse clock.
        assert len(set(pids)) == 1
        assert runner.n_children == 1

    run_with_runner(body, max_children=1)


def test_print_does_not_break_protocol() -> None:
    """Output on stdout and on fd 1 goes to stderr, and stdin reads nothing, not protocol bytes."""

    def noisy(payload: str) -> str:
        print("\x00\x00\x00\x05hello from the user function", payload)
        os.write(1, b"\xff\xff\xff\xff raw bytes on fd 1\n")
        return sys.stdin.read() + payload

    async def body(runner: SyncRunner) -> None:
        assert await runner.run(noisy, "a", timeout_s=30) == "a"
        assert await runner.run(noisy, "b", timeout_s=30) == "b"

    run_with_runner(body)


def test_warm_child_reused() -> None:
    """Later calls reuse the same child and the function it loaded on the first call."""
    calls: list[str] = []

    def count_calls(payload: str) -> tuple[int, int]:
        calls.append(payload)  # The child's copy of the list, kept while the child caches fn.
        return os.getpid(), len(calls)

    async def body(runner: SyncRunner) -> None:
        replies = [await runner.run(count_calls, str(i), timeout_s=30) for i in range(3)]
        pids = {pid for pid, _ in replies}
        assert len(pids) == 1
        assert [count for _, count in replies] == [1, 2, 3]

    run_with_runner(body)


def test_collected_function_is_forgotten() -> None:
    """After a function object is garbage collected, the child drops its copy on the next call.

    The check reads the runner's private records, because the child's cache is not visible
    from outside.
    """

    def make_function(tag: str) -> Callable[[str], str]:
        def tagged(payload: str) -> str:
            return tag + payload

        return tagged

    async def body(runner: SyncRunner) -> None:
        first = make_function("first:")
        assert await runner.run(first, "x", timeout_s=30) == "first:x"
        del first
        gc.collect()

        second = make_function("second:")
        assert await runner.run(second, "x", timeout_s=30) == "second:x"
        assert await runner.run(second, "y", timeout_s=30) == "second:y"
        (child,) = runner._children
        assert len(child.loaded_keys) == 1
        assert child.forget_keys == []

    run_with_runner(body)


def test_resize_stops_idle_children() -> None:
    async def body(runner: SyncRunner) -> None:
        pids = await asyncio.gather(*(runner.run(get_pid, "", timeout_s=30) for _ in range(2)))
        assert runner.n_children == 2

        runner.resize(1)
        assert runner.n_children == 1
        await wait_until(lambda: sum(pid_exists(pid) for pid in pids) == 1)

        runner.resize(3)
        await asyncio.gather(*(runner.run(get_pid, "", timeout_s=30) for _ in range(3)))
        assert runner.n_children == 3

    run_with_runner(body, max_children=2)


def test_aclose_stops_children() -> None:
    async def main() -> None:
        runner = SyncRunner(2)
        pids = await asyncio.gather(*(runner.run(get_pid, "", timeout_s=30) for _ in range(2)))

        await runner.aclose()
        assert runner.n_children == 0
        assert not any(pid_exists(pid) for pid in pids)

        await runner.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await runner.run(get_pid, "", timeout_s=30)

    asyncio.run(main())


def test_aclose_during_call_stops_child(tmp_path: Path) -> None:
    """A child whose stdin closes in the middle of a call exits without waiting for the kill."""
    marker = tmp_path / "started"

    async def main() -> None:
        runner = SyncRunner(1)
        call = asyncio.create_task(runner.run(mark_and_sleep, str(marker), timeout_s=60))
        pid = await wait_for_marker(marker)

        started = time.monotonic()
        await runner.aclose()
        elapsed_s = time.monotonic() - started

        assert elapsed_s < 1.0  # Less than STOP_GRACE_S, so the child exited on its own.
        assert not pid_exists(pid)
        with pytest.raises(WorkerProcessError, match="stopped by SyncRunner.aclose"):
            await call

    asyncio.run(main())


PARENT_SCRIPT = """
import asyncio, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from persistentq.workers.sync_runner import SyncRunner

def mark_and_sleep(marker_path):
    Path(marker_path).write_text(str(os.getpid()))
    time.sleep(60)

asyncio.run(SyncRunner(1).run(mark_and_sleep, sys.argv[2], timeout_s=60))
"""


def test_parent_death_stops_busy_child(tmp_path: Path) -> None:
    """A child in the middle of a call exits when its parent dies, instead of running on."""
    marker = tmp_path / "started"
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(REPO_ROOT), str(marker)])

    async def main() -> None:
        try:
            child_pid = await wait_for_marker(marker)
        finally:
            parent.kill()
            parent.wait()
        await wait_until(lambda: not pid_exists(child_pid))

    asyncio.run(main())


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="max_children"):
        SyncRunner(-1)
    with pytest.raises(TypeError, match="max_children"):
        SyncRunner(True)
    with pytest.raises(ValueError, match="start_timeout_s"):
        SyncRunner(1, start_timeout_s=0)

    async def body(runner: SyncRunner) -> None:
        with pytest.raises(ValueError, match="timeout_s"):
            await runner.run(get_pid, "", timeout_s=0)
        with pytest.raises(TypeError, match="callable"):
            await runner.run("not a function", "", timeout_s=1)  # type: ignore[arg-type]

    run_with_runner(body)
