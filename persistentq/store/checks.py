"""Checks shared by every store: payload limits, text clipping, local filesystems."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from ..errors import InvalidPayloadError, PayloadTooLargeError, StoreError
from .base import MAX_PAYLOAD_BYTES

# Filesystem types whose locking SQLite's WAL mode cannot rely on, because
# WAL needs shared memory that every process on one host maps.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ceph",
    "glusterfs", "lustre", "fuse.sshfs", "fuse.rclone", "davfs", "fuse.davfs2",
})


def check_payload(payload: object) -> None:
    """Raise TypeError for a non-str payload, InvalidPayloadError for one that is not
    valid Unicode, and PayloadTooLargeError above the limit."""
    if not isinstance(payload, str):
        raise TypeError(f"a payload must be a str, got {type(payload).__name__}: {payload!r:.80}")
    try:
        size = len(payload.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidPayloadError(
            f"payload has a character that is not valid Unicode text ({exc.reason} at "
            f"position {exc.start}); encode binary data as text, for example with base64"
        ) from None
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(
            f"payload of {size} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes (1 MiB); "
            "store large data in a file and put its name as the payload"
        )


def clip(text: str | None, max_chars: int) -> str | None:
    """Cut `text` to `max_chars`, keeping its end, where the error message of a traceback is.

    Characters that UTF-8 cannot encode (lone surrogates, as in undecodable
    file names) are escaped, since one of them would fail a whole grouped commit.
    """
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= max_chars:
        return text
    return "[...]" + text[-(max_chars - 5):]


def filesystem_type(path: Path) -> str | None:
    """Return the filesystem type under `path` from /proc/mounts, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for entry in entries:
        if len(entry) < 3:
            continue
        mount_point = entry[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, entry[2]
    return best_type


def check_local_filesystem(database: Path) -> None:
    """Raise StoreError when the database's folder is on a network filesystem (Linux only)."""
    fs_type = filesystem_type(database.parent)
    if fs_type in NETWORK_FILESYSTEMS:
        raise StoreError(
            f"{database} is on a network filesystem ({fs_type}), where SQLite's WAL mode "
            "is unsafe; put the database on a local disk, or use PostgreSQL for several machines"
        )


MAX_PRIORITY = 2**63 - 1


def check_put_options(priority: int, delay_s: float) -> None:
    """Raise TypeError or ValueError for a priority or delay that the queue cannot store."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}: {priority!r:.40}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between -(2**63 - 1) and 2**63 - 1, got {priority}")
    if not (isinstance(delay_s, (int, float)) and math.isfinite(delay_s) and delay_s >= 0):
        raise ValueError(f"delay_s must be a finite number of seconds >= 0, got {delay_s!r:.40}")


def check_interval(interval_s: float) -> float:
    """Return `interval_s` as a float, or raise ValueError unless it is a positive finite number."""
    interval = float(interval_s)
    if not math.isfinite(interval) or interval <= 0:
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    return interval
