"""The dashboard's ASGI app: FastAPI routes, security checks, and a WorkerPool on the same event loop.

    app = create_app(load_config("config.yaml"))
    # serve it with uvicorn; the pool starts with the app and stops with it

The app opens the queue's store and hands it to the pool, so the API reads
and writes the same store that the workers use, and stopping the pool from
the page leaves the store open for the API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import Config
from ..errors import InvalidPayloadError, InvalidStateError, JobNotFoundError, PayloadTooLargeError, StoreError
from ..pool import WorkerPool
from ..store.factory import open_store
from . import api, events
from .security import AccessPolicy, SecurityMiddleware
from .state import Dashboard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# The status of each error that the store and the admin operations raise on bad requests.
# Starlette picks the handler of the nearest class in an exception's MRO, so
# PayloadTooLargeError gets 413 although it subclasses InvalidPayloadError.
ERROR_STATUSES: dict[type[Exception], int] = {
    JobNotFoundError: 404,
    InvalidStateError: 409,
    PayloadTooLargeError: 413,
    InvalidPayloadError: 422,
    # The database is locked past the wait limit, deleted, or unreachable: a retry may work later.
    StoreError: 503,
}
MAX_VALIDATION_ERRORS = 3


def create_app(
    config: Config,
    *,
    pool: WorkerPool | None = None,
    start_pool: bool = True,
    events_interval_s: float = 1.0,
) -> FastAPI:
    """Build the dashboard app for `config`, served at config.web.host and config.web.port.

    `pool` defaults to a WorkerPool of `config` on a store that the app opens
    and closes. The pool starts with the app unless `start_pool` is False, and
    stops with it in any case.
    """
    owned_store = open_store(config) if pool is None else None
    if pool is None:
        pool = WorkerPool(config, store=owned_store)
    # NOTE: a pool passed in that opened its own store closes it on every stop
    # and reopens it on the next use, so a request made during a stop may fail.
    state = Dashboard(config=config, pool=pool, events_interval_s=events_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_pool:
            await pool.start()
        try:
            yield
        finally:
            state.closing.set()
            await pool.stop()
            if owned_store is not None:
                owned_store.close()

    app = FastAPI(
        title="persistentq dashboard",
        summary=f"The queue {config.general.queue!r} and the workers of this process.",
        version=_version(),
        lifespan=lifespan,
        # The built-in docs pages load their scripts from a CDN; the OpenAPI document stays.
        docs_url=None,
        redoc_url=None,
    )
    app.state.dashboard = state
    app.include_router(api.router)
    app.include_router(api.pool_router)
    app.include_router(events.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", index, include_in_schema=False)
    _add_error_handlers(app)
    policy = AccessPolicy.for_address(config.web.host, config.web.port, token=config.web.token)
    app.add_middleware(SecurityMiddleware, policy=policy)
    return app


async def index() -> FileResponse:
    """Serve the dashboard page; it reads everything else from the API."""
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("persistentq")
    except PackageNotFoundError:
        return "unknown"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status_handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, str(exc))

    return handler


def _add_error_handlers(app: FastAPI) -> None:
    """Return every error as {"error": "..."} with the status that names its kind."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI raises a bare "error parsing the body" from the decoder's error, such as
            # invalid UTF-8, nesting deeper than the recursion limit, or an integer of over 4300 digits.
            return _error(400, f"request body is not valid JSON: {exc.__cause__}"[:300])
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    for error_type, status in ERROR_STATUSES.items():
        app.add_exception_handler(error_type, _status_handler(status))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                  exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}; the server log has the traceback")


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    """Turn pydantic's error list into one sentence; malformed JSON is a 400, other bad input a 422."""
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        detail = next(error for error in errors if error.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "")
        return _error(400, f"request body is not valid JSON: {reason}".rstrip(": "))
    parts = []
    for error in errors[:MAX_VALIDATION_ERRORS]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        value = error.get("input")
        got = f", got {value!r:.60}" if isinstance(value, (str, int, float)) and value != "" else ""
        parts.append(f"{location}: {error.get('msg', 'invalid value')}{got}")
    more = len(errors) - MAX_VALIDATION_ERRORS
    suffix = f" (and {more} more)" if more > 0 else ""
    return _error(422, "invalid request: " + "; ".join(parts) + suffix)
