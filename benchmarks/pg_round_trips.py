"""Time PostgreSQL's raw claim and ack alone, and wrapped in the transactions the store uses.

    python benchmarks/pg_round_trips.py [--jobs 1000] [--repeat 3]

Each job is claimed and acked with the raw loop's statements (FOR UPDATE SKIP
LOCKED, synchronous_commit off), first as one autocommit statement each. Then
each statement runs inside BEGIN, SET LOCAL synchronous_commit TO off and
COMMIT, as PersistentQPostgres runs every claim and outcome. The gap between
the two is the cost of the extra round trips alone. It uses the server of the benchmarks
(PERSISTENTQ_BENCH_POSTGRES) and drops the database it creates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import postgres_server  # noqa: E402
from benchmarks.designs import PG_RAW_ACK, PG_RAW_CLAIM, PG_RAW_INSERT_MANY, PG_RAW_SCHEMA  # noqa: E402


def claim_and_ack(conn, jobs: int, *, wrapped: bool) -> float:
    """Claim and ack `jobs` queued jobs one at a time and return the jobs per second."""
    started = time.perf_counter()
    for _ in range(jobs):
        if wrapped:
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit TO off")
                job_id = conn.execute(PG_RAW_CLAIM).fetchone()[0]
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit TO off")
                conn.execute(PG_RAW_ACK, (job_id,))
        else:
            job_id = conn.execute(PG_RAW_CLAIM).fetchone()[0]
            conn.execute(PG_RAW_ACK, (job_id,))
    return jobs / (time.perf_counter() - started)


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs claimed and acked per timing")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each kind, interleaved")
    args = parser.parse_args()

    reason = postgres_server.unreachable_reason()
    if reason is not None:
        sys.exit(reason)
    folder = Path(tempfile.mkdtemp(prefix="pq-round-trips-"))
    url = postgres_server.open_database(folder)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit TO off")
            for statement in PG_RAW_SCHEMA:
                conn.execute(statement)
            for _ in range(args.repeat):
                for wrapped in (False, True):
                    conn.execute("TRUNCATE jobs")
                    conn.execute(PG_RAW_INSERT_MANY, ([f"job-{index}" for index in range(args.jobs)],))
                    rate = claim_and_ack(conn, args.jobs, wrapped=wrapped)
                    label = "BEGIN, SET LOCAL, statement, COMMIT" if wrapped else "one autocommit statement"
                    print(f"{label}: {rate:,.0f} jobs/s")
    finally:
        postgres_server.drop_database(folder)
        folder.rmdir()


if __name__ == "__main__":
    main()
