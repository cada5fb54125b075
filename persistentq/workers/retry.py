"""The retry rule: when a failed attempt is retried, and after how long."""

from __future__ import annotations

import random

# Backoff stops doubling here, so a job with many tries still comes back within the hour.
MAX_BACKOFF_S = 3600.0


def is_final_attempt(attempts: int, n_tries: int) -> bool:
    """Tell whether a job that has used `attempts` attempts must fail rather than retry."""
    return attempts >= n_tries


def backoff_delay(attempts: int, base_s: float, rng: random.Random) -> float:
    """Return the seconds to wait before the next attempt, after `attempts` failed ones.

    Exponential with jitter: the ceiling doubles from `base_s` with each
    attempt, and the delay is drawn between half the ceiling and the ceiling,
    so retries of jobs that failed together spread out. A base of 0 retries at once.
    """
    if base_s <= 0:
        return 0.0
    # The exponent is capped first: 2 ** attempts overflows a float past about 1,000 attempts.
    doublings = min(max(attempts - 1, 0), 64)
    ceiling = min(base_s * 2.0**doublings, MAX_BACKOFF_S)
    return rng.uniform(ceiling / 2, ceiling)
