"""The dashboard's live updates: a server-sent event stream of snapshots.

Each event is `event: snapshot` with the JSON of SnapshotOut, sent every
`events_interval_s` seconds while the client stays connected. When reading
the queue fails, one `event: problem` with {"error": "..."} is sent instead,
and snapshots resume once reading works again. Streams with
the same chart settings share one store read. At most MAX_EVENT_STREAMS
streams are open at once; more get 503. The stream ends when the server
begins to shut down, so a browser left open does not hold the shutdown up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .api import ERRORS, IntervalS, State, WindowS, check_buckets, check_store
from .state import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, MAX_EVENT_STREAMS, Dashboard

log = logging.getLogger(__name__)

RECONNECT_MS = 2000
RETRY_AFTER_S = 5
router = APIRouter(prefix="/api", responses=ERRORS, dependencies=[Depends(check_store)])


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that counts itself among the dashboard's open streams until it ends."""

    def __init__(self, state: Dashboard, content: AsyncIterator[str], **options) -> None:
        super().__init__(content, media_type="text/event-stream", **options)
        self.state = state
        state.open_streams += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.state.open_streams -= 1


@router.get(
    "/events",
    summary="Server-sent events: a snapshot (as GET /api/snapshot returns it) every second",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(state: State, interval_s: IntervalS = DEFAULT_INTERVAL_S,
                 window_s: WindowS = DEFAULT_WINDOW_S) -> StreamingResponse:
    check_buckets(interval_s, window_s)
    if state.open_streams >= MAX_EVENT_STREAMS:
        raise HTTPException(503, f"{state.open_streams} event streams are open, the limit is {MAX_EVENT_STREAMS}; "
                                 "close other dashboard tabs or try again later",
                            headers={"retry-after": str(RETRY_AFTER_S)})
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return EventStreamResponse(state, snapshots(state, interval_s=interval_s, window_s=window_s), headers=headers)


async def snapshots(state: Dashboard, *, interval_s: float, window_s: float) -> AsyncIterator[str]:
    """Yield one snapshot event now and one every `state.events_interval_s` until the server closes."""
    yield f"retry: {RECONNECT_MS}\n\n"
    failing = False
    while not state.closing.is_set():
        try:
            event = await state.until_closing(state.snapshot_event(interval_s=interval_s, window_s=window_s))
        except Exception as exc:
            # A failed read (a locked or vanished database) skips one event and the next one tries
            # again. Only the first failure in a row is logged and sent, so a stream does not flood
            # the log, and the page does not go on showing old numbers as live.
            if not failing:
                log.warning("event stream: could not read the queue, retrying every %g s: %s",
                            state.events_interval_s, exc)
                yield f"event: problem\ndata: {json.dumps({'error': f'reading the queue failed: {exc}'})}\n\n"
            failing = True
        else:
            if event is None:
                break
            if failing:
                log.info("event stream: reading the queue works again")
            failing = False
            yield event
        await state.until_closing(asyncio.sleep(state.events_interval_s))
