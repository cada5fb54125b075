"""The SQLite schema and every SQL statement the SQLite store runs, by name.

Values are always bound as parameters, never formatted into the SQL. Times are
REAL seconds since the epoch from the local clock.
"""

from __future__ import annotations

# Bump when the schema changes, and add the migration from the previous version.
# Version 2 added job_counts.
SCHEMA_VERSION = 2

# The store runs these one by one, split at semicolons, so no comment may contain one.
CREATE_SCHEMA = """
-- AUTOINCREMENT: ids of purged jobs are never handed out again.
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- n_tries of the process that made the last claim, which recovery judges by.
    max_attempts INTEGER,
    created_at REAL NOT NULL,
    available_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease_token TEXT,
    lease_expires_at REAL,
    worker_id TEXT,
    last_error TEXT,
    result TEXT,
    unique_key TEXT,
    discarded INTEGER NOT NULL DEFAULT 0
);

-- The claim order, and only queued rows: the index stays as small as the
-- backlog however many finished rows the table keeps.
CREATE INDEX IF NOT EXISTS jobs_claim_order
    ON jobs (queue, priority DESC, available_at, id) WHERE state = 'queued';

CREATE INDEX IF NOT EXISTS jobs_lease_expiry
    ON jobs (queue, lease_expires_at) WHERE state = 'running';

-- Pages of one state, newest first, and the counts per state.
CREATE INDEX IF NOT EXISTS jobs_state_page ON jobs (queue, state, id);

-- Pages of every state, newest first. Only puts and purges write to it,
-- since neither column ever changes.
CREATE INDEX IF NOT EXISTS jobs_queue_page ON jobs (queue, id);

CREATE INDEX IF NOT EXISTS jobs_unique_key
    ON jobs (queue, unique_key) WHERE unique_key IS NOT NULL;

CREATE INDEX IF NOT EXISTS jobs_undiscarded
    ON jobs (queue, id) WHERE state = 'failed' AND discarded = 0;

CREATE INDEX IF NOT EXISTS jobs_finished_at
    ON jobs (queue, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0
);
"""

# Jobs per queue and state, kept by triggers in the transaction that changes
# the jobs, so counts() reads a few rows instead of counting every job (a count
# over 1,000,000 jobs took 60-87 ms on a 2-core machine). Each statement runs
# on its own because trigger bodies contain semicolons. The INSERT ... SELECT
# fills the table once, when a file of schema version 1 is upgraded.
CREATE_JOB_COUNTS = (
    """
    CREATE TABLE IF NOT EXISTS job_counts (
        queue TEXT NOT NULL,
        state TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID
    """,
    """
    INSERT INTO job_counts (queue, state, jobs)
    SELECT queue, state, count(*) FROM jobs GROUP BY queue, state
    """,
    """
    CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs
    BEGIN
        INSERT INTO job_counts (queue, state, jobs) VALUES (new.queue, new.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET jobs = jobs + 1;
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs
    BEGIN
        UPDATE job_counts SET jobs = jobs - 1 WHERE queue = old.queue AND state = old.state;
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF queue, state ON jobs
    WHEN old.state IS NOT new.state OR old.queue IS NOT new.queue
    BEGIN
        UPDATE job_counts SET jobs = jobs - 1 WHERE queue = old.queue AND state = old.state;
        INSERT INTO job_counts (queue, state, jobs) VALUES (new.queue, new.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET jobs = jobs + 1;
    END
    """,
)

JOB_COLUMNS = (
    "id, queue, payload, state, priority, attempts, created_at, available_at, started_at, "
    "finished_at, lease_expires_at, worker_id, last_error, result, unique_key"
)

INSERT_JOB = """
INSERT INTO jobs (queue, payload, state, priority, created_at, available_at, unique_key)
VALUES (?, ?, 'queued', ?, ?, ?, ?)
"""

FIND_ACTIVE_UNIQUE = """
SELECT id FROM jobs
WHERE queue = ? AND unique_key = ? AND state IN ('queued', 'running')
LIMIT 1
"""

# One statement claims the whole batch. The unary + on available_at keeps the
# planner on the claim order once ANALYZE statistics exist: without it SQLite
# may use that column as a range and sort every ready job under the write lock.
# NOTE: jobs delayed into the future (backoff, delay_s) are skipped one by one,
# so a very large delayed backlog of one priority slows each empty claim.
#
# One statement claims the whole batch. It runs inside BEGIN IMMEDIATE, which
# takes SQLite's single write lock first, so no other connection can claim the
# same rows between the SELECT and the UPDATE.
CLAIM = """
UPDATE jobs
SET state = 'running',
    attempts = attempts + 1,
    max_attempts = :max_attempts,
    started_at = :now,
    lease_token = lower(hex(randomblob(16))),
    lease_expires_at = :now + :lease_s,
    worker_id = :worker_id
WHERE id IN (
    SELECT id FROM jobs
    WHERE queue = :queue AND state = 'queued' AND +available_at <= :now
    ORDER BY priority DESC, available_at, id
    LIMIT :limit
)
RETURNING id, queue, payload, priority, attempts, lease_token, available_at
"""

FAIL_EXPIRED = """
UPDATE jobs
SET state = 'failed', finished_at = :now, lease_token = NULL, lease_expires_at = NULL,
    last_error = 'lease expired: the worker stopped responding during attempt ' || attempts
WHERE queue = :queue AND state = 'running' AND lease_expires_at < :now
  AND attempts >= coalesce(max_attempts, :max_attempts)
"""

REQUEUE_EXPIRED = """
UPDATE jobs
SET state = 'queued', available_at = :now, lease_token = NULL, lease_expires_at = NULL,
    last_error = 'lease expired: the worker stopped responding during attempt ' || attempts
WHERE queue = :queue AND state = 'running' AND lease_expires_at < :now
"""

ACK = """
UPDATE jobs
SET state = 'done', finished_at = :now, result = :result, lease_token = NULL,
    lease_expires_at = NULL, worker_id = coalesce(:worker_id, worker_id)
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
"""

RETRY = """
UPDATE jobs
SET state = 'queued', available_at = :now + :delay_s, last_error = :error,
    lease_token = NULL, lease_expires_at = NULL, worker_id = coalesce(:worker_id, worker_id)
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
"""

FAIL = """
UPDATE jobs
SET state = 'failed', finished_at = :now, last_error = :error, lease_token = NULL,
    lease_expires_at = NULL, worker_id = coalesce(:worker_id, worker_id)
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
"""

RELEASE = """
UPDATE jobs
SET state = 'queued', attempts = max(attempts - 1, 0), available_at = :now,
    started_at = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
"""

RENEW = """
UPDATE jobs SET lease_expires_at = :now + :lease_s
WHERE id = :job_id AND lease_token = :lease_token AND state = 'running'
"""

# Lists of ids travel as one JSON array parameter, so any length binds the same way.
QUEUES_OF_IDS = "SELECT DISTINCT queue FROM jobs WHERE id IN (SELECT value FROM json_each(?))"

STATES_OF_IDS = "SELECT id, state FROM jobs WHERE id IN (SELECT value FROM json_each(?))"

CANCEL = """
UPDATE jobs SET state = 'cancelled', finished_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'queued'
"""

REQUEUE = """
UPDATE jobs
SET state = 'queued', attempts = 0, available_at = ?, started_at = NULL, finished_at = NULL,
    lease_token = NULL, lease_expires_at = NULL, discarded = 0
WHERE id IN (SELECT value FROM json_each(?)) AND state IN ('failed', 'cancelled')
"""

# Failed rows whose files the cleaner has not discarded yet are kept, or their
# .failed files would be left with no row pointing at them.
PURGE = """
DELETE FROM jobs
WHERE queue = ? AND state IN (SELECT value FROM json_each(?)) AND finished_at < ?
  AND NOT (state = 'failed' AND discarded = 0)
"""

COUNTS = "SELECT state, jobs FROM job_counts WHERE queue = ? AND jobs > 0"

GET_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"

# INDEXED BY: the planner otherwise scans every failed row of jobs_state_page.
FAILED_UNDISCARDED = f"""
SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_undiscarded
WHERE queue = ? AND state = 'failed' AND discarded = 0
ORDER BY id LIMIT ?
"""

# Only failed rows not yet marked: a requeue that got there first wins, and
# the cleaner then leaves that job's files alone.
MARK_DISCARDED = """
UPDATE jobs SET discarded = 1
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'failed' AND discarded = 0
RETURNING id
"""

DISCARDED_OF_IDS = """
SELECT id FROM jobs
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'failed' AND discarded = 1
"""

ACTIVE_KEY_CLASH = """
SELECT requeued.id, active.id FROM jobs AS requeued
JOIN jobs AS active
  ON active.queue = requeued.queue AND active.unique_key = requeued.unique_key
 AND active.state IN ('queued', 'running') AND active.id != requeued.id
WHERE requeued.id IN (SELECT value FROM json_each(?)) AND requeued.unique_key IS NOT NULL
LIMIT 1
"""

UPSERT_WORKER = """
INSERT OR REPLACE INTO workers
    (id, kind, host, pid, state, started_at, heartbeat_at, runs, successes, errors)
VALUES (:id, :kind, :host, :pid, :state, :started_at, :heartbeat_at, :runs, :successes, :errors)
"""

LIST_WORKERS = """
SELECT id, kind, host, pid, state, started_at, heartbeat_at, runs, successes, errors
FROM workers ORDER BY started_at DESC, id
"""

FORGET_WORKERS = "DELETE FROM workers WHERE heartbeat_at < ?"


def page_query(
    *, with_state: bool, with_search: bool, with_since: bool = False, with_until: bool = False
) -> str:
    """Build the SELECT for one page of jobs, newest first, from fixed fragments."""
    conditions = ["queue = ?"]
    if with_state:
        conditions.append("state = ?")
    if with_search:
        conditions.append("payload LIKE ? ESCAPE '\\'")
    if with_since:
        conditions.append("created_at >= ?")
    if with_until:
        conditions.append("created_at < ?")
    where = " AND ".join(conditions)
    return f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?"


# Done and failed jobs per interval of finish time; the partial index
# jobs_finished_at bounds the scan to the asked time range.
THROUGHPUT = """
SELECT CAST(finished_at / :interval AS INTEGER) AS bucket,
       sum(state = 'done'), sum(state = 'failed')
FROM jobs
WHERE queue = :queue AND finished_at IS NOT NULL
  AND finished_at >= :since AND finished_at < :until
  AND state IN ('done', 'failed')
GROUP BY bucket ORDER BY bucket
"""
