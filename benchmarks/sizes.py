"""How many jobs each measure handles, in a full run and in a quick one."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    """Job counts and sample counts for one run."""

    put: int  # jobs put one per commit
    put_many: int  # jobs put in one commit
    claim_ack: int  # jobs taken and acked one at a time
    cycle: int  # jobs run by the worker pool with an async no-op
    cycle_sync: int  # jobs run by the worker pool with a plain no-op in child processes
    multiprocess: int  # jobs put by 1 producer and run by 4 consumer processes
    drain: int  # jobs drained from each backlog
    big_backlog: int  # the large backlog drained from, and the size of the DataFrame queue
    wake_samples: int  # puts timed from put to start, per wake-up measure
    lock_hold_s: float  # how long another process holds the write lock
    view_calls: int  # DataFrame and counts calls timed per measure


FULL = Sizes(
    put=10_000,
    put_many=100_000,
    claim_ack=10_000,
    cycle=20_000,
    cycle_sync=10_000,
    multiprocess=10_000,
    drain=20_000,
    big_backlog=1_000_000,
    wake_samples=100,
    lock_hold_s=2.0,
    view_calls=5,
)

QUICK = Sizes(
    put=500,
    put_many=5_000,
    claim_ack=500,
    cycle=1_000,
    cycle_sync=300,
    multiprocess=500,
    drain=500,
    big_backlog=20_000,
    wake_samples=10,
    lock_hold_s=0.5,
    view_calls=2,
)

# PostgreSQL commits every put with a WAL flush, and the store makes four
# round trips per claim and four per ack (BEGIN, SET LOCAL, the statement,
# COMMIT), so its one-job-at-a-time measures ran 7 to 40 times slower than
# SQLite's in two full runs on the 2-core machine of docs/benchmarks.md. A tenth of the jobs
# (a fifth for put, a twentieth for drain) keeps a full run with both
# databases near 10 minutes there. The big backlog stays at 1,000,000 jobs,
# the size the drain and view measures are about.
POSTGRES_FULL = replace(FULL, put=2_000, claim_ack=1_000, cycle_sync=1_000, multiprocess=1_000, drain=1_000)
