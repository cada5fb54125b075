"""Access to the real services that some tests need, such as Chromium.

A test that needs one skips with the reason on a machine without it, and
fails instead when the CI variable is set, so a CI run never passes by
skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def skip_or_fail(reason: str) -> None:
    """Skip the calling test for `reason`, or fail it when running under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this test may not skip)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str:
    """Return the path of a Chromium to drive with Playwright, or skip/fail the test."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright package is not installed: pip install -e '.[dev]'")
    configured = os.environ.get("PERSISTENTQ_CHROMIUM")
    for candidate in ([configured] if configured else []) + list(CHROMIUM_CANDIDATES):
        path = shutil.which(candidate)
        if path:
            return path
    skip_or_fail("no Chromium found: install the chromium package or set PERSISTENTQ_CHROMIUM")
    raise AssertionError("unreachable")


# Flags that let headless Chromium run as root without a GPU and keep it from
# reaching for any host but the one under test. Playwright rejects
# --user-data-dir here: give each run launch_persistent_context(fresh_dir).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
