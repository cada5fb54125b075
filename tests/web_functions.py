"""Job functions that the web app tests name in their configs as `web_functions:NAME`."""

from __future__ import annotations


async def echo(payload: str) -> str:
    """Return the payload upper-cased."""
    return payload.upper()


async def fail_marked(payload: str) -> str:
    """Fail every payload that contains "fail"; return the others upper-cased."""
    if "fail" in payload:
        raise ValueError(f"asked to fail by the payload {payload!r}")
    return payload.upper()


async def produce_nothing() -> None:
    """A producer that puts no job, so a test controls every job itself."""
    return None
