"""The dashboard's JSON API under /api: read the queue, act on jobs, control the pool.

Store calls are blocking, so the routes that make them are plain functions,
which FastAPI runs in its thread pool. Routes that drive the pool are
coroutines, because the pool's workers live on the event loop.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from ..admin import purge_jobs, requeue_jobs
from ..errors import InvalidStateError, PermanentJobError
from ..files import input_path
from ..store.base import Job, JobState
from .schemas import (
    MAX_JOB_ID, CountsOut, EnqueueIn, EnqueueOut, ErrorOut, JobPageOut, JobSummaryOut, KindIn,
    PoolOut, PurgeIn, PurgeOut, RegisteredWorkerOut, RequeueOut, ScaleIn, SnapshotOut, ThroughputOut,
)
from .state import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S, Dashboard, dashboard

MAX_PAGE = 500
MAX_BUCKETS = 2000

ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 503)}


def check_store(request: Request) -> None:
    """Raise StoreError (503) when the queue database was deleted or replaced since the app opened it.

    Connections opened before a deletion keep reading and writing the deleted
    file without an error, so without this check an enqueue would return 201
    and its jobs would be lost.
    """
    request.app.state.dashboard.store.check_health()


router = APIRouter(prefix="/api", responses=ERRORS, dependencies=[Depends(check_store)])
# The pool routes skip check_store because FastAPI would run it in its thread pool, and
# they must keep working while blocked store calls (a database lock) fill that pool.
pool_router = APIRouter(prefix="/api/pool", responses=ERRORS)

JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="The job's id.")]
IntervalS = Annotated[float, Query(gt=0, le=86400, allow_inf_nan=False,
                                   description="Seconds per bucket of the throughput chart.")]
WindowS = Annotated[float, Query(gt=0, le=31 * 86400, allow_inf_nan=False,
                                 description="Seconds of history in the throughput chart.")]
State = Annotated[Dashboard, Depends(dashboard)]


def check_buckets(interval_s: float, window_s: float) -> None:
    """Raise HTTPException 422 when a chart would have more than MAX_BUCKETS intervals."""
    if window_s / interval_s > MAX_BUCKETS:
        raise HTTPException(422, f"window_s / interval_s is {window_s / interval_s:.0f}, over the "
                                 f"limit of {MAX_BUCKETS} intervals; choose a longer interval_s")


# Reading.


@router.get("/snapshot", response_model=SnapshotOut, summary="Counts, pool, workers and throughput at once")
async def get_snapshot(state: State, interval_s: IntervalS = DEFAULT_INTERVAL_S,
                       window_s: WindowS = DEFAULT_WINDOW_S) -> SnapshotOut:
    check_buckets(interval_s, window_s)
    return await state.snapshot(interval_s=interval_s, window_s=window_s)


@router.get("/counts", response_model=CountsOut, summary="Jobs per state")
def get_counts(state: State) -> CountsOut:
    return CountsOut.of(state.store.counts(queue=state.queue))


@router.get("/throughput", response_model=ThroughputOut, summary="Jobs done and failed per interval")
def get_throughput(state: State, interval_s: IntervalS = DEFAULT_INTERVAL_S,
                   window_s: WindowS = DEFAULT_WINDOW_S) -> ThroughputOut:
    check_buckets(interval_s, window_s)
    return state.throughput(interval_s=interval_s, window_s=window_s)


@router.get("/workers", response_model=list[RegisteredWorkerOut],
            summary="Registered workers of every process, with heartbeat and lost flag")
def get_workers(state: State) -> list[RegisteredWorkerOut]:
    return state.registry()


@router.get("/jobs", response_model=JobPageOut, summary="A page of jobs, newest first")
def list_jobs(
    state: State,
    job_state: Annotated[JobState | None, Query(alias="state", description="Only jobs in this state.")] = None,
    search: Annotated[str | None, Query(max_length=200, description="Only payloads containing this text.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> JobPageOut:
    found = state.store.jobs(queue=state.queue, state=job_state, search=search or None,
                             limit=limit + 1, offset=offset)
    return JobPageOut(jobs=[JobSummaryOut.of(job) for job in found[:limit]], limit=limit, offset=offset,
                      has_more=len(found) > limit)


@router.get("/jobs/{job_id}", response_model=Job, summary="One job with every field")
def get_job(state: State, job_id: JobId) -> Job:
    return state.store.get(job_id)


# Acting on jobs.


@router.post("/jobs", response_model=EnqueueOut, status_code=201, summary="Put jobs on the queue")
def enqueue(state: State, request: EnqueueIn) -> EnqueueOut:
    if request.unique_key is not None and len(request.payloads) != 1:
        raise HTTPException(422, f"unique_key takes one payload, got {len(request.payloads)}; "
                                 "send one request per payload")
    for payload in request.payloads:
        check_input_file(state, payload)

    store, queue = state.store, state.queue
    if request.unique_key is None:
        ids = store.put_many(request.payloads, queue=queue, priority=request.priority, delay_s=request.delay_s)
        return EnqueueOut(ids=ids, added=len(ids))
    started = time.time()
    job_id = store.put(request.payloads[0], queue=queue, priority=request.priority,
                       delay_s=request.delay_s, unique_key=request.unique_key)
    return EnqueueOut(ids=[job_id], added=int(store.get(job_id).created_at >= started))


def check_input_file(state: Dashboard, payload: str) -> None:
    """Raise HTTPException 422 unless `payload` names an existing input file inside primary_path.

    Only the file pipeline reads files named by payloads; other consumers take any text.
    """
    pipeline = state.file_pipeline
    if pipeline is None:
        return
    try:
        path = input_path(pipeline.primary_path, payload, pipeline.protected)
    except PermanentJobError as exc:
        raise HTTPException(422, str(exc)) from None
    if not path.is_file() or path.is_symlink():
        raise HTTPException(422, f"no input file {payload!r:.80} in {pipeline.primary_path}; the file "
                                 "pipeline's payloads name files there, so write the file first")


@router.post("/jobs/{job_id}/cancel", response_model=Job, summary="Cancel a queued job")
def cancel_job(state: State, job_id: JobId) -> Job:
    job = state.store.get(job_id)
    if job.state != JobState.QUEUED or state.store.cancel([job_id]) == 0:
        current = state.store.get(job_id).state
        raise InvalidStateError(f"job {job_id} is {current}; only queued jobs can be cancelled")
    return state.store.get(job_id)


@router.post("/jobs/{job_id}/requeue", response_model=Job,
             summary="Queue a failed or cancelled job again, attempts from 0")
def requeue_job(state: State, job_id: JobId) -> Job:
    result = requeue_jobs(state.store, state.config, [job_id])
    if result.rejected:
        raise InvalidStateError(result.rejected[job_id])
    return state.store.get(job_id)


@router.post("/jobs/requeue-failed", response_model=RequeueOut, summary="Queue every failed job again")
def requeue_failed(state: State) -> RequeueOut:
    ids = failed_ids(state)
    result = requeue_jobs(state.store, state.config, ids)
    return RequeueOut(requeued=result.requeued, rejected=result.rejected)


def failed_ids(state: Dashboard, page_size: int = 1000) -> list[int]:
    """Return the ids of every failed job of the dashboard's queue.

    Only the ids are kept, and pages are small, because each job of a page
    carries its payload (up to 1 MiB).
    """
    ids: list[int] = []
    while page := state.store.jobs(queue=state.queue, state=JobState.FAILED, limit=page_size, offset=len(ids)):
        ids += [job.id for job in page]
    return ids


@router.post("/purge", response_model=PurgeOut, summary="Delete finished jobs")
def purge(state: State, request: Annotated[PurgeIn, Body()] = PurgeIn()) -> PurgeOut:
    states = [JobState(name) for name in dict.fromkeys(request.states)]
    return PurgeOut(purged=purge_jobs(state.store, state.config, states=states,
                                      older_than_s=request.older_than_s))


# The pool of this process.


@pool_router.get("", response_model=PoolOut, summary="The workers of this process")
async def get_pool(state: State) -> PoolOut:
    return state.pool_out()


@pool_router.post("/start", response_model=PoolOut, summary="Start the configured workers")
async def start_pool(state: State) -> PoolOut:
    await state.pool.start()
    return state.pool_out()


@pool_router.post("/stop", response_model=PoolOut,
             summary="Stop every worker gracefully; running jobs finish or go back to the queue")
async def stop_pool(state: State) -> PoolOut:
    await state.pool.stop()
    return state.pool_out()


@pool_router.post("/pause", response_model=PoolOut, summary="Pause the workers of one kind, or all")
async def pause_pool(state: State, request: Annotated[KindIn, Body()] = KindIn()) -> PoolOut:
    state.pool.pause(request.kind)
    return state.pool_out()


@pool_router.post("/resume", response_model=PoolOut, summary="Resume the workers of one kind, or all")
async def resume_pool(state: State, request: Annotated[KindIn, Body()] = KindIn()) -> PoolOut:
    state.pool.resume(request.kind)
    return state.pool_out()


@pool_router.post("/scale", response_model=PoolOut, summary="Run this many producers and consumers")
async def scale_pool(state: State, request: ScaleIn) -> PoolOut:
    try:
        await state.pool.scale(n_prod=request.n_prod, n_cons=request.n_cons)
    except RuntimeError:
        raise InvalidStateError("the pool is stopped; start it before scaling it") from None
    return state.pool_out()
