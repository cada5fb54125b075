"""The PostgreSQL schema and every SQL statement the PostgreSQL store runs, by name.

Values are always bound as parameters, never formatted into the SQL. The
tables live in one PostgreSQL schema (``persistentq`` unless the store is
given another), which each connection puts first on its search_path, so the
statements below name tables without a schema.

Times are double precision seconds since the epoch, taken from the database
server's clock (NOW below), so machines with skewed clocks agree on leases.
Epoch seconds rather than timestamptz keep one representation across both
stores: the contract, the DataFrames and the throughput buckets all work in
epoch seconds, and the arithmetic of leases and buckets stays plain addition.
"""

from __future__ import annotations

# Bump when the schema changes, and add the migration from the previous version.
SCHEMA_VERSION = 1

# The server's time when the statement started, in epoch seconds. Every row a
# statement touches gets the same value, as with a time bound from Python.
NOW = "extract(epoch FROM statement_timestamp())::double precision"

# PostgreSQL rejects NOTIFY payloads of 8000 bytes or more, so the store
# sends no notification for a queue whose name is longer than this. Consumers
# of such a queue find its jobs at their next poll.
MAX_NOTIFY_QUEUE_BYTES = 4000

# A lock named by text, held until the transaction commits or rolls back. It
# serialises schema creation between processes that open the store at once,
# and puts of one unique key.
ADVISORY_XACT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(lock_name)s, 0))"

SERVER_VERSION = "SELECT current_setting('server_version_num')::integer"

SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s"

SCHEMA_USAGE = "SELECT has_schema_privilege(%(schema)s, 'USAGE')"

VERSION_TABLE_EXISTS = "SELECT to_regclass('schema_version') IS NOT NULL"

READ_VERSION = "SELECT max(version) FROM schema_version"

# Run one by one, in a transaction that has taken ADVISORY_XACT_LOCK.
CREATE_TABLES = (
    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
    # An identity column draws ids from a sequence, so ids of purged jobs are
    # never handed out again.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue text NOT NULL,
        payload text NOT NULL,
        state text NOT NULL
            CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        priority bigint NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer,
        created_at double precision NOT NULL,
        available_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        lease_token text,
        lease_expires_at double precision,
        worker_id text,
        last_error text,
        result text,
        unique_key text,
        discarded boolean NOT NULL DEFAULT false
    )
    """,
    # The claim order over queued rows only, so the index stays as small as
    # the backlog however many finished rows the table keeps.
    """
    CREATE INDEX IF NOT EXISTS jobs_claim_order
        ON jobs (queue, priority DESC, available_at, id) WHERE state = 'queued'
    """,
    """
    CREATE INDEX IF NOT EXISTS jobs_lease_expiry
        ON jobs (queue, lease_expires_at) WHERE state = 'running'
    """,
    "CREATE INDEX IF NOT EXISTS jobs_state_page ON jobs (queue, state, id)",
    "CREATE INDEX IF NOT EXISTS jobs_queue_page ON jobs (queue, id)",
    """
    CREATE INDEX IF NOT EXISTS jobs_unique_key
        ON jobs (queue, unique_key) WHERE unique_key IS NOT NULL
    """,
    """
    CREATE INDEX IF NOT EXISTS jobs_undiscarded
        ON jobs (queue, id) WHERE state = 'failed' AND NOT discarded
    """,
    """
    CREATE INDEX IF NOT EXISTS jobs_finished_at
        ON jobs (queue, finished_at) WHERE finished_at IS NOT NULL
    """,
    """
    CREATE TABLE IF NOT EXISTS workers (
        id text PRIMARY KEY,
        kind text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        state text NOT NULL,
        started_at double precision NOT NULL,
        heartbeat_at double precision NOT NULL,
        runs bigint NOT NULL DEFAULT 0,
        successes bigint NOT NULL DEFAULT 0,
        errors bigint NOT NULL DEFAULT 0
    )
    """,
)

# Claims and outcomes commit without waiting for the WAL flush, which cut
# the cost of a claim and an ack by about 40% on a 2-core test machine. A
# server crash can then undo the last of them: the PostgreSQL manual
# ("Asynchronous Commit") puts the window at three times wal_writer_delay,
# 0.6 s by default. An undone claim or ack means the job runs again, which
# at-least-once delivery allows. Puts, cancels, requeues and purges wait for
# the flush, so a committed put is not lost. general.synchronous "full" turns
# this off, so every commit waits.
#
# The pooled connections run in autocommit mode with the setting off for the
# session, so a claim or an outcome is one statement and one round trip. Each
# durable transaction sets the server's own value back for itself.
SHOW_COMMIT_SETTING = "SHOW synchronous_commit"
ASYNC_COMMIT_SESSION = "SELECT set_config('synchronous_commit', 'off', false)"
# The values synchronous_commit takes, so the server's own can be written into BEGIN_DURABLE.
COMMIT_SETTINGS = frozenset({"on", "off", "local", "remote_write", "remote_apply"})
# Sent as one simple query, so a durable transaction starts in one round trip.
BEGIN_DURABLE = "BEGIN; SET LOCAL synchronous_commit TO {setting}"

WRITE_VERSION = "INSERT INTO schema_version (version) VALUES (%(version)s)"

JOB_COLUMNS = (
    "id, queue, payload, state, priority, attempts, created_at, available_at, started_at, "
    "finished_at, lease_expires_at, worker_id, last_error, result, unique_key"
)

# Sent in the transaction of a put, so listeners hear of the job only once it
# is committed, and not at all when the put rolls back.
NOTIFY = "SELECT pg_notify(%(channel)s, %(notice)s)"

FIND_ACTIVE_UNIQUE = """
SELECT id FROM jobs
WHERE queue = %(queue)s AND unique_key = %(unique_key)s AND state IN ('queued', 'running')
LIMIT 1
"""

INSERT_JOB = f"""
INSERT INTO jobs (queue, payload, state, priority, created_at, available_at, unique_key)
VALUES (%(queue)s, %(payload)s, 'queued', %(priority)s, {NOW}, {NOW} + %(delay_s)s, %(unique_key)s)
RETURNING id
"""

# The insert and its notification in one statement, which saves a put one round trip.
INSERT_JOB_NOTIFY = f"""
WITH job AS ({INSERT_JOB})
SELECT id, pg_notify(%(channel)s, %(notice)s) FROM job
"""

# The identity default is drawn row by row in the ORDER BY order, so sorting
# the returned ids gives them in the order of the payloads.
INSERT_MANY = f"""
INSERT INTO jobs (queue, payload, state, priority, created_at, available_at)
SELECT %(queue)s, given.payload, 'queued', %(priority)s, {NOW}, {NOW} + %(delay_s)s
FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS given(payload, position)
ORDER BY given.position
RETURNING id
"""

# Copies jobs from another store with their state, attempts, times and
# errors. They get new ids, drawn in the order given, so FIFO order survives.
IMPORT_JOBS = """
INSERT INTO jobs (queue, payload, state, priority, attempts, created_at, available_at,
                  started_at, finished_at, last_error, result, unique_key, discarded)
SELECT given.queue, given.payload, given.state, given.priority, given.attempts, given.created_at,
       given.available_at, given.started_at, given.finished_at, given.last_error, given.result,
       given.unique_key, given.discarded
FROM unnest(%(queues)s::text[], %(payloads)s::text[], %(states)s::text[], %(priorities)s::bigint[],
            %(attempts)s::integer[], %(created)s::double precision[],
            %(available)s::double precision[], %(started)s::double precision[],
            %(finished)s::double precision[], %(errors)s::text[], %(results)s::text[],
            %(unique_keys)s::text[], %(discarded)s::boolean[])
     WITH ORDINALITY AS given(queue, payload, state, priority, attempts, created_at, available_at,
                              started_at, finished_at, last_error, result, unique_key, discarded,
                              position)
ORDER BY given.position
RETURNING id
"""

# One statement claims the whole batch. FOR UPDATE SKIP LOCKED makes each
# claimer lock the rows it picks and pass over rows another claimer has
# locked, so concurrent claims never take the same job and never wait for each
# other's row locks. A picked row is re-checked against the WHERE clause after its lock
# is granted, so a job claimed and committed meanwhile is not taken again.
# NOTE: jobs delayed into the future (backoff, delay_s) are skipped one by one
# in the index, so a very large delayed backlog of one priority slows each claim.
CLAIM = f"""
WITH picked AS (
    SELECT id FROM jobs
    WHERE queue = %(queue)s AND state = 'queued' AND available_at <= {NOW}
    ORDER BY priority DESC, available_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs
SET state = 'running',
    attempts = jobs.attempts + 1,
    max_attempts = %(max_attempts)s,
    started_at = {NOW},
    lease_token = replace(gen_random_uuid()::text, '-', ''),
    lease_expires_at = {NOW} + %(lease_s)s,
    worker_id = %(worker_id)s
FROM picked
WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.queue, jobs.payload, jobs.priority, jobs.attempts, jobs.lease_token,
          jobs.available_at
"""

# Requeues every running job of the queue whose lease expired, or fails it
# when that was its last attempt, judged by the max_attempts of its claim.
# SKIP LOCKED leaves a row alone while its worker is writing an outcome.
RECOVER_EXPIRED = f"""
WITH expired AS (
    SELECT id, attempts >= coalesce(max_attempts, %(max_attempts)s) AS last_attempt
    FROM jobs
    WHERE queue = %(queue)s AND state = 'running' AND lease_expires_at < {NOW}
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs
SET state = CASE WHEN expired.last_attempt THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN expired.last_attempt THEN {NOW} ELSE jobs.finished_at END,
    available_at = CASE WHEN expired.last_attempt THEN jobs.available_at ELSE {NOW} END,
    lease_token = NULL,
    lease_expires_at = NULL,
    last_error = 'lease expired: the worker stopped responding during attempt ' || jobs.attempts
FROM expired
WHERE jobs.id = expired.id
RETURNING jobs.state
"""

# Outcomes travel as parallel arrays, one element per outcome, and each
# statement returns the positions of the outcomes whose lease token matched.
_OUTCOMES = """
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(worker_ids)s::text[], %(results)s::text[],
            %(errors)s::text[], %(delays)s::double precision[])
     WITH ORDINALITY AS given(id, token, worker_id, result, error, delay_s, position)
WHERE jobs.id = given.id AND jobs.lease_token = given.token AND jobs.state = 'running'
RETURNING given.position
"""

ACK = f"""
UPDATE jobs
SET state = 'done', finished_at = {NOW}, result = given.result, lease_token = NULL,
    lease_expires_at = NULL, worker_id = coalesce(given.worker_id, jobs.worker_id)
{_OUTCOMES}"""

RETRY = f"""
UPDATE jobs
SET state = 'queued', available_at = {NOW} + given.delay_s, last_error = given.error,
    lease_token = NULL, lease_expires_at = NULL, worker_id = coalesce(given.worker_id, jobs.worker_id)
{_OUTCOMES}"""

FAIL = f"""
UPDATE jobs
SET state = 'failed', finished_at = {NOW}, last_error = given.error, lease_token = NULL,
    lease_expires_at = NULL, worker_id = coalesce(given.worker_id, jobs.worker_id)
{_OUTCOMES}"""

RELEASE = f"""
UPDATE jobs
SET state = 'queued', attempts = greatest(jobs.attempts - 1, 0), available_at = {NOW},
    started_at = NULL, lease_token = NULL, lease_expires_at = NULL
{_OUTCOMES}"""

RENEW = f"""
UPDATE jobs SET lease_expires_at = {NOW} + %(lease_s)s
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) WITH ORDINALITY AS given(id, token, position)
WHERE jobs.id = given.id AND jobs.lease_token = given.token AND jobs.state = 'running'
RETURNING given.position
"""

# Lists of ids travel as one bigint[] parameter, so any length binds the same way.
QUEUES_OF_IDS = "SELECT DISTINCT queue FROM jobs WHERE id = ANY(%(ids)s::bigint[])"

# FOR UPDATE: the states read here stay true until the transaction commits.
STATES_OF_IDS = "SELECT id, state FROM jobs WHERE id = ANY(%(ids)s::bigint[]) FOR UPDATE"

CANCEL = f"""
UPDATE jobs SET state = 'cancelled', finished_at = {NOW}
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'queued'
"""

REQUEUE = f"""
UPDATE jobs
SET state = 'queued', attempts = 0, available_at = {NOW}, started_at = NULL, finished_at = NULL,
    lease_token = NULL, lease_expires_at = NULL, discarded = false
WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('failed', 'cancelled')
"""

# Failed rows whose leftovers the cleaner has not discarded yet are kept, or
# their .failed files would be left with no row pointing at them.
PURGE = f"""
DELETE FROM jobs
WHERE queue = %(queue)s AND state = ANY(%(states)s::text[])
  AND finished_at < {NOW} - %(older_than_s)s
  AND NOT (state = 'failed' AND NOT discarded)
"""

COUNTS = "SELECT state, count(*) FROM jobs WHERE queue = %(queue)s GROUP BY state"

GET_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s"

FAILED_UNDISCARDED = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE queue = %(queue)s AND state = 'failed' AND NOT discarded
ORDER BY id LIMIT %(limit)s
"""

# Only failed rows not yet marked: a requeue that got there first wins, and
# the cleaner then leaves that job's files alone.
MARK_DISCARDED = """
UPDATE jobs SET discarded = true
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'failed' AND NOT discarded
RETURNING id
"""

DISCARDED_OF_IDS = """
SELECT id FROM jobs
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'failed' AND discarded
ORDER BY id LIMIT 1
"""

# Sorted, so requeues that lock several keys take their locks in one order.
UNIQUE_KEYS_OF_IDS = """
SELECT DISTINCT queue, unique_key FROM jobs
WHERE id = ANY(%(ids)s::bigint[]) AND unique_key IS NOT NULL
ORDER BY queue, unique_key
"""

ACTIVE_KEY_CLASH = """
SELECT requeued.id, active.id FROM jobs AS requeued
JOIN jobs AS active
  ON active.queue = requeued.queue AND active.unique_key = requeued.unique_key
 AND active.state IN ('queued', 'running') AND active.id <> requeued.id
WHERE requeued.id = ANY(%(ids)s::bigint[]) AND requeued.unique_key IS NOT NULL
ORDER BY requeued.id LIMIT 1
"""

UPSERT_WORKER = """
INSERT INTO workers (id, kind, host, pid, state, started_at, heartbeat_at, runs, successes, errors)
VALUES (%(id)s, %(kind)s, %(host)s, %(pid)s, %(state)s, %(started_at)s, %(heartbeat_at)s,
        %(runs)s, %(successes)s, %(errors)s)
ON CONFLICT (id) DO UPDATE
SET kind = excluded.kind, host = excluded.host, pid = excluded.pid, state = excluded.state,
    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, runs = excluded.runs,
    successes = excluded.successes, errors = excluded.errors
"""

LIST_WORKERS = """
SELECT id, kind, host, pid, state, started_at, heartbeat_at, runs, successes, errors
FROM workers ORDER BY started_at DESC, id
"""

# Heartbeat times come from each worker's own clock (the registry shows the
# times a worker reported), so the cutoff is taken from the caller's clock too.
FORGET_WORKERS = "DELETE FROM workers WHERE heartbeat_at < %(cutoff)s"


def page_query(*, with_state: bool, with_search: bool, with_since: bool, with_until: bool) -> str:
    """Build the SELECT for one page of jobs, newest first, from fixed fragments."""
    conditions = ["queue = %(queue)s"]
    if with_state:
        conditions.append("state = %(state)s")
    if with_search:
        # strpos matches plain text, so % and _ in the search need no escaping.
        conditions.append("strpos(payload, %(search)s) > 0")
    if with_since:
        conditions.append("created_at >= %(since)s")
    if with_until:
        conditions.append("created_at < %(until)s")
    where = " AND ".join(conditions)
    return f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s"


# Done and failed jobs per interval of finish time; the partial index
# jobs_finished_at bounds the scan to the requested time range.
THROUGHPUT = """
SELECT floor(finished_at / %(interval)s) AS bucket,
       count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed')
FROM jobs
WHERE queue = %(queue)s AND finished_at IS NOT NULL
  AND finished_at >= %(since)s AND finished_at < %(until)s
  AND state IN ('done', 'failed')
GROUP BY bucket ORDER BY bucket
"""
