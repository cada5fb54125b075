"""The dashboard's live updates: a server-sent event stream of snapshots.

Each event is `event: snapshot` with the JSON of SnapshotOut, sent every
`events_interval_s` seconds while the client stays connected. The stream ends
when the server begins to shut down, so a browser left open does not hold
the shutdown up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from .api import IntervalS, State, WindowS, check_buckets
from .state import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, Dashboard

log = logging.getLogger(__name__)

RECONNECT_MS = 2000
router = APIRouter(prefix="/api")


@router.get(
    "/events",
    summary="Server-sent events: a snapshot (as GET /api/snapshot returns it) every second",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(state: State, interval_s: IntervalS = DEFAULT_INTERVAL_S,
                 window_s: WindowS = DEFAULT_WINDOW_S) -> StreamingResponse:
    check_buckets(interval_s, window_s)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(snapshots(state, interval_s=interval_s, window_s=window_s),
                             media_type="text/event-stream", headers=headers)


async def snapshots(state: Dashboard, *, interval_s: float, window_s: float) -> AsyncIterator[str]:
    """Yield one snapshot event now and one every `state.events_interval_s` until the server closes."""
    yield f"retry: {RECONNECT_MS}\n\n"
    failing = False
    while not state.closing.is_set():
        try:
            snapshot = await state.snapshot(interval_s=interval_s, window_s=window_s)
        except Exception as exc:
            # A failed read (a locked or vanished database) skips one event and the next one tries
            # again. Only the first failure in a row is logged, so a stream does not flood the log.
            if not failing:
                log.warning("event stream: could not read the queue, retrying every %g s: %s",
                            state.events_interval_s, exc)
            failing = True
        else:
            if failing:
                log.info("event stream: reading the queue works again")
            failing = False
            yield f"event: snapshot\ndata: {snapshot.model_dump_json()}\n\n"
        try:
            await asyncio.wait_for(state.closing.wait(), state.events_interval_s)
        except asyncio.TimeoutError:
            pass
