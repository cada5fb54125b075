"""The dashboard's JSON API, called in-process through Starlette's TestClient on a real SQLite queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistentq.files import FAILED_SUFFIX
from persistentq.pool import WorkerPool
from persistentq.store.base import MAX_PAYLOAD_BYTES, JobState, PersistentQStore, WorkerRecord
from persistentq.web import create_app
from persistentq.web.api import failed_ids
from persistentq.web.state import MAX_STOPPED_IN_SNAPSHOT
from web_support import BASE_URL, TestClient, assert_error, make_config, wait_until


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app whose pool is not started, so only the test changes the queue."""
    app = create_app(make_config(tmp_path), start_pool=False)
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture()
def store(client: TestClient) -> PersistentQStore:
    """The store that the client's app reads and writes."""
    return client.app.state.dashboard.store


def failed_job(store: PersistentQStore, payload: str) -> int:
    """Put a job ahead of all others, claim it and fail it; return its id."""
    job_id = store.put(payload, priority=100)
    [job] = store.claim(lease_s=30, worker_id="test", max_attempts=1)
    assert job.id == job_id
    store.fail(job.id, job.lease_token, error="Traceback ...\nValueError: broken")
    return job_id


def done_job(store: PersistentQStore, payload: str) -> int:
    """Put a job ahead of all others, claim it and ack it; return its id."""
    job_id = store.put(payload, priority=100)
    [job] = store.claim(lease_s=30, worker_id="test", max_attempts=1)
    store.ack(job.id, job.lease_token, result=f"{payload}.out")
    return job_id


# The page and the document.


def test_index_serves_page_and_assets(client: TestClient) -> None:
    """The page, its script and its style come from the app, with a same-origin-only CSP."""
    page = client.get("/")

    assert page.status_code == 200
    assert "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert "http" not in page.text.replace("http-equiv", ""), "the page may load nothing from elsewhere"


def test_openapi_lists_every_route(client: TestClient) -> None:
    """The OpenAPI document describes every API route, and no docs page loads a CDN."""
    paths = set(client.get("/openapi.json").json()["paths"])

    assert paths == {
        "/api/snapshot", "/api/counts", "/api/throughput", "/api/workers", "/api/jobs", "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/requeue", "/api/jobs/requeue-failed", "/api/purge",
        "/api/pool", "/api/pool/start", "/api/pool/stop", "/api/pool/pause", "/api/pool/resume",
        "/api/pool/scale", "/api/events",
    }
    assert client.get("/docs").status_code == 404


def test_unknown_path_is_json_404(client: TestClient) -> None:
    """An unknown path gets 404 with a JSON error."""
    assert_error(client.get("/api/nothing"), 404)


# Reading.


def test_counts_match_store(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/counts returns the store's count of every state."""
    store.put_many(["a", "b"])
    failed_job(store, "c")

    counts = client.get("/api/counts").json()

    assert counts == {"queued": 2, "running": 0, "done": 0, "failed": 1, "cancelled": 0}


def test_jobs_page_and_filters(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/jobs pages newest first and filters by state and payload text."""
    ids = store.put_many([f"job {n}" for n in range(5)])
    failed = failed_job(store, "special one")

    first = client.get("/api/jobs", params={"limit": 2}).json()
    last = client.get("/api/jobs", params={"limit": 2, "offset": 4}).json()
    by_state = client.get("/api/jobs", params={"state": "failed"}).json()
    by_search = client.get("/api/jobs", params={"search": "job 3"}).json()

    assert [job["id"] for job in first["jobs"]] == [failed, ids[4]]
    assert first["has_more"] is True
    assert [job["id"] for job in last["jobs"]] == [ids[1], ids[0]]
    assert last["has_more"] is False
    assert [job["id"] for job in by_state["jobs"]] == [failed]
    assert by_state["jobs"][0]["outcome"] == "ValueError: broken"
    assert [job["id"] for job in by_search["jobs"]] == [ids[3]]


def test_jobs_page_cuts_long_payloads(client: TestClient, store: PersistentQStore) -> None:
    """A table row carries the first 200 characters of a payload and the whole length."""
    store.put("x" * 5000)

    [row] = client.get("/api/jobs").json()["jobs"]

    assert row["payload"] == "x" * 200
    assert row["payload_chars"] == 5000


@pytest.mark.parametrize("params, word", [
    ({"state": "finished"}, "state"),
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
    ({"search": "s" * 201}, "search"),
])
def test_jobs_bad_query_is_422(client: TestClient, params: dict, word: str) -> None:
    """A bad filter or page parameter gets 422 naming the parameter."""
    assert_error(client.get("/api/jobs", params=params), 422, word)


def test_job_detail_has_every_field(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/jobs/{id} returns payload, attempts, timings, last error and result."""
    job_id = failed_job(store, "payload text")

    job = client.get(f"/api/jobs/{job_id}").json()

    assert job["payload"] == "payload text"
    assert job["state"] == "failed"
    assert job["attempts"] == 1
    assert job["started_at"] <= job["finished_at"]
    assert job["last_error"].endswith("ValueError: broken")
    assert job["result"] is None


@pytest.mark.parametrize("path, status", [
    ("/api/jobs/999", 404), ("/api/jobs/0", 422), ("/api/jobs/abc", 422), (f"/api/jobs/{2**64}", 422),
])
def test_job_detail_bad_id(client: TestClient, path: str, status: int) -> None:
    """An unknown job id gets 404; an id that is not a positive 64-bit integer gets 422."""
    assert_error(client.get(path), status)


def test_workers_lists_registry_with_lost_flag(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/workers shows workers of other processes, marks silent ones lost, hides old stopped ones."""
    now = time.time()
    store.register_worker(WorkerRecord("alive", "consumer", "host-a", 11, "running", now, now))
    store.register_worker(WorkerRecord("silent", "consumer", "host-b", 12, "running", now - 100, now - 60))
    store.register_worker(WorkerRecord("gone", "producer", "host-c", 13, "stopped", now - 9000, now - 8000))

    workers = {worker["id"]: worker for worker in client.get("/api/workers").json()}

    assert set(workers) == {"alive", "silent"}
    assert workers["alive"]["lost"] is False
    assert workers["silent"]["lost"] is True
    assert workers["silent"]["host"] == "host-b"


def test_snapshot_keeps_recent_stopped_workers(client: TestClient, store: PersistentQStore) -> None:
    """The snapshot lists every active worker but only the most recent stopped ones, and counts the rest."""
    now = time.time()
    store.register_worker(WorkerRecord("active", "consumer", "host-a", 11, "running", now, now))
    extra = 5
    for number in range(MAX_STOPPED_IN_SNAPSHOT + extra):
        store.register_worker(WorkerRecord(f"stopped-{number}", "consumer", "host-a", 11, "stopped", now - 100,
                                           now - number))

    snapshot = client.get("/api/snapshot").json()
    shown = {worker["id"] for worker in snapshot["workers"]}

    assert "active" in shown
    assert shown - {"active"} == {f"stopped-{number}" for number in range(MAX_STOPPED_IN_SNAPSHOT)}
    assert snapshot["stopped_not_shown"] == extra
    assert len(client.get("/api/workers").json()) == MAX_STOPPED_IN_SNAPSHOT + extra + 1


def test_throughput_counts_done_and_failed(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/throughput puts the jobs that finished now in the current bucket."""
    done_job(store, "a")
    done_job(store, "b")
    failed_job(store, "c")

    throughput = client.get("/api/throughput", params={"interval_s": 3600, "window_s": 7200}).json()

    assert throughput["interval_s"] == 3600
    assert sum(bucket["done"] for bucket in throughput["buckets"]) == 2
    assert sum(bucket["failed"] for bucket in throughput["buckets"]) == 1


@pytest.mark.parametrize("params", [
    {"interval_s": 0}, {"interval_s": -5}, {"interval_s": "nan"}, {"window_s": 0},
    {"interval_s": 1, "window_s": 86400},
])
def test_throughput_bad_interval_is_422(client: TestClient, params: dict) -> None:
    """A non-positive interval, a NaN, or a chart of more than 2000 intervals gets 422."""
    assert_error(client.get("/api/throughput", params=params), 422)


def test_snapshot_gathers_everything(client: TestClient, store: PersistentQStore) -> None:
    """GET /api/snapshot returns counts, the pool, the registry and throughput in one response."""
    store.put("a")

    snapshot = client.get("/api/snapshot").json()

    assert snapshot["counts"]["queued"] == 1
    assert snapshot["pool"]["running"] is False
    assert snapshot["queue"] == "default"
    assert snapshot["throughput"]["interval_s"] == 5
    assert isinstance(snapshot["workers"], list)


# Enqueue.


def test_enqueue_puts_jobs(client: TestClient, store: PersistentQStore) -> None:
    """POST /api/jobs puts every payload with the priority and returns the ids in order."""
    response = client.post("/api/jobs", json={"payloads": ["a", "b"], "priority": 7})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["added"] == 2
    assert [store.get(job_id).payload for job_id in body["ids"]] == ["a", "b"]
    assert {store.get(job_id).priority for job_id in body["ids"]} == {7}


def test_enqueue_unique_key_returns_first_job(client: TestClient, store: PersistentQStore) -> None:
    """A second enqueue with the same unique key returns the first id and adds nothing."""
    first = client.post("/api/jobs", json={"payloads": ["a"], "unique_key": "k"}).json()
    second = client.post("/api/jobs", json={"payloads": ["b"], "unique_key": "k"}).json()

    assert second["ids"] == first["ids"]
    assert first["added"] == 1
    assert second["added"] == 0
    assert store.counts()[JobState.QUEUED] == 1


@pytest.mark.parametrize("body, status, word", [
    ({"payloads": ["a", "b"], "unique_key": "k"}, 422, "unique_key"),
    ({"payloads": []}, 422, "payloads"),
    ({"payloads": "a"}, 422, "payloads"),
    ({"payloads": [1]}, 422, "payloads"),
    ({"payloads": ["a"], "delay_s": -1}, 422, "delay_s"),
    ({"payloads": ["a"], "priority": 2**63}, 422, "priority"),
    ({"payloads": ["a"], "colour": "red"}, 422, "colour"),
    ({}, 422, "payloads"),
])
def test_enqueue_bad_body_changes_nothing(client: TestClient, store: PersistentQStore, body: dict, status: int,
                                          word: str) -> None:
    """An enqueue with a bad field gets 4xx naming the field, and puts no job."""
    assert_error(client.post("/api/jobs", json=body), status, word)
    assert store.jobs() == []


def test_enqueue_oversize_payload_is_413(client: TestClient, store: PersistentQStore) -> None:
    """A payload over 1 MiB gets 413, and the payloads sent with it are not put either."""
    response = client.post("/api/jobs", json={"payloads": ["small", "x" * (MAX_PAYLOAD_BYTES + 1)]})

    assert_error(response, 413, str(MAX_PAYLOAD_BYTES))
    assert store.jobs() == []


def test_enqueue_oversize_body_is_413(client: TestClient, store: PersistentQStore) -> None:
    """A request body over the 8 MiB cap gets 413 before it is parsed."""
    body = json.dumps({"payloads": ["y" * (1024 * 1024)] * 9})

    response = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})

    assert_error(response, 413, "request body")
    assert store.jobs() == []


@pytest.mark.parametrize("content, words", [
    (b'{"payloads": ["\xff"]}', ["utf-8", "position"]),
    ('{"payloads": ' + "[" * 100_000 + "]" * 100_000 + "}", ["recursion"]),
    ('{"payloads": ["a"], "priority": ' + "9" * 5000 + "}", ["digits"]),
])
def test_undecodable_body_names_reason(client: TestClient, store: PersistentQStore, content: str | bytes,
                                       words: list[str]) -> None:
    """A body that the JSON decoder fails on (bad UTF-8, deep nesting, a huge integer) gets 400 naming why."""
    response = client.post("/api/jobs", content=content, headers={"content-type": "application/json"})

    assert_error(response, 400, "not valid JSON", *words)
    assert store.jobs() == []


@pytest.mark.parametrize("content", ['{"payloads": ["a"', "not json", '{"payloads": ["\\ud800"]}', ""])
def test_enqueue_malformed_json_changes_nothing(client: TestClient, store: PersistentQStore, content: str) -> None:
    """Malformed JSON, a lone surrogate or an empty body gets 400 or 422 and puts no job."""
    response = client.post("/api/jobs", content=content, headers={"content-type": "application/json"})

    assert response.status_code in (400, 422), response.text
    assert "error" in response.json()
    assert store.jobs() == []


def test_enqueue_malformed_json_is_400(client: TestClient) -> None:
    """Truncated JSON gets 400 saying the body is not valid JSON."""
    response = client.post("/api/jobs", content='{"payloads": [', headers={"content-type": "application/json"})

    assert_error(response, 400, "not valid JSON")


# Cancel, requeue, purge.


def test_cancel_queued_job(client: TestClient, store: PersistentQStore) -> None:
    """Cancelling a queued job returns the cancelled job; cancelling it again gets 409."""
    job_id = store.put("a")

    first = client.post(f"/api/jobs/{job_id}/cancel")
    second = client.post(f"/api/jobs/{job_id}/cancel")

    assert first.status_code == 200
    assert first.json()["state"] == "cancelled"
    assert_error(second, 409, "cancelled", "only queued jobs")
    assert store.get(job_id).state == JobState.CANCELLED


def test_cancel_failed_job_is_409(client: TestClient, store: PersistentQStore) -> None:
    """A failed job cannot be cancelled: 409, and it stays failed."""
    job_id = failed_job(store, "a")

    assert_error(client.post(f"/api/jobs/{job_id}/cancel"), 409, "failed")
    assert store.get(job_id).state == JobState.FAILED


def test_cancel_unknown_job_is_404(client: TestClient) -> None:
    """Cancelling an id that does not exist gets 404 naming it."""
    assert_error(client.post("/api/jobs/4242/cancel"), 404, "4242")


def test_requeue_failed_job(client: TestClient, store: PersistentQStore) -> None:
    """Requeueing a failed job queues it again with attempts back at 0."""
    job_id = failed_job(store, "a")

    response = client.post(f"/api/jobs/{job_id}/requeue")

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    assert store.get(job_id).attempts == 0


def test_requeue_done_job_is_409(client: TestClient, store: PersistentQStore) -> None:
    """A done job cannot be requeued: 409, and it stays done."""
    job_id = done_job(store, "a")

    assert_error(client.post(f"/api/jobs/{job_id}/requeue"), 409, "done")
    assert store.get(job_id).state == JobState.DONE


def test_requeue_unknown_job_is_404(client: TestClient) -> None:
    """Requeueing an id that does not exist gets 404."""
    assert_error(client.post("/api/jobs/4242/requeue"), 404, "4242")


def test_requeue_all_failed(client: TestClient, store: PersistentQStore) -> None:
    """POST /api/jobs/requeue-failed queues every failed job and no other."""
    failed = [failed_job(store, "a"), failed_job(store, "b")]
    done = done_job(store, "c")

    body = client.post("/api/jobs/requeue-failed").json()

    assert sorted(body["requeued"]) == sorted(failed)
    assert body["rejected"] == {}
    assert store.get(done).state == JobState.DONE
    assert store.counts()[JobState.QUEUED] == 2


def test_failed_ids_reads_every_page(client: TestClient, store: PersistentQStore) -> None:
    """failed_ids collects the ids of failed jobs across pages smaller than their number, and nothing else."""
    failed = [failed_job(store, f"f{number}") for number in range(5)]
    done_job(store, "d")

    ids = failed_ids(client.app.state.dashboard, page_size=2)

    assert sorted(ids) == sorted(failed)


def test_purge_chosen_states(client: TestClient, store: PersistentQStore) -> None:
    """POST /api/purge deletes the finished jobs of the given states only."""
    done = done_job(store, "a")
    failed = failed_job(store, "b")
    queued = store.put("c")

    body = client.post("/api/purge", json={"states": ["done"]}).json()

    assert body == {"purged": 1}
    assert [job.id for job in store.jobs()] == [queued, failed]
    assert done not in [job.id for job in store.jobs()]


def test_purge_default_takes_every_finished_state(client: TestClient, store: PersistentQStore) -> None:
    """POST /api/purge without a body deletes done, failed and cancelled jobs, never queued ones."""
    done_job(store, "a")
    failed_job(store, "b")
    queued = store.put("c")

    assert client.post("/api/purge").json() == {"purged": 2}
    assert [job.id for job in store.jobs()] == [queued]


@pytest.mark.parametrize("body", [{"states": ["queued"]}, {"states": []}, {"older_than_s": -1}, {"states": "done"}])
def test_purge_bad_body_changes_nothing(client: TestClient, store: PersistentQStore, body: dict) -> None:
    """A purge of an unfinished state, no state or a negative age gets 422 and deletes nothing."""
    done_job(store, "a")

    assert_error(client.post("/api/purge", json=body), 422)
    assert len(store.jobs()) == 1


def test_get_is_not_allowed_on_actions(client: TestClient, store: PersistentQStore) -> None:
    """State changes take POST only: GET on an action gets 405 and changes nothing."""
    job_id = store.put("a")

    assert_error(client.get(f"/api/jobs/{job_id}/cancel"), 405)
    assert_error(client.get("/api/purge"), 405)
    assert store.get(job_id).state == JobState.QUEUED


# The pool.


def test_pool_lifecycle(client: TestClient, store: PersistentQStore) -> None:
    """Start, pause, resume, scale and stop the pool, each returning the pool's new state."""
    assert client.get("/api/pool").json()["running"] is False

    started = client.post("/api/pool/start").json()
    paused = client.post("/api/pool/pause", json={"kind": "consumer"}).json()
    resumed = client.post("/api/pool/resume", json={"kind": "consumer"}).json()
    scaled = client.post("/api/pool/scale", json={"n_cons": 2, "n_prod": 0}).json()
    stopped = client.post("/api/pool/stop").json()

    assert started["running"] is True
    assert (started["producers"], started["consumers"]) == (1, 1)
    assert paused["paused"] == ["consumer"]
    assert {w["state"] for w in paused["workers"] if w["kind"] == "consumer"} == {"paused"}
    assert resumed["paused"] == []
    assert (scaled["producers"], scaled["consumers"]) == (0, 2)
    assert stopped["running"] is False
    assert stopped["workers"] == []


def test_pool_runs_enqueued_jobs(client: TestClient, store: PersistentQStore) -> None:
    """Jobs enqueued through the API are run by the app's own pool once it starts."""
    ids = client.post("/api/jobs", json={"payloads": ["hello", "please fail"]}).json()["ids"]
    client.post("/api/pool/start")

    wait_until(lambda: all(store.get(job_id).state in (JobState.DONE, JobState.FAILED) for job_id in ids))

    assert store.get(ids[0]).result == "HELLO"
    assert store.get(ids[1]).state == JobState.FAILED
    assert "asked to fail" in store.get(ids[1]).last_error


def test_scale_stopped_pool_is_409(client: TestClient) -> None:
    """Scaling a stopped pool gets 409 and starts nothing."""
    assert_error(client.post("/api/pool/scale", json={"n_cons": 2}), 409, "start it")
    assert client.get("/api/pool").json()["workers"] == []


@pytest.mark.parametrize("body", [{"n_cons": True}, {"n_cons": "2"}, {"n_cons": 2.0}, {"n_prod": False}])
def test_scale_other_json_type_is_422(client: TestClient, body: dict) -> None:
    """A boolean, string or float worker count gets 422 instead of being read as a number, and nothing is scaled."""
    client.post("/api/pool/start")

    response = client.post("/api/pool/scale", json=body)

    assert_error(response, 422, "valid integer")
    pool = client.get("/api/pool").json()
    assert (pool["producers"], pool["consumers"]) == (1, 1)


@pytest.mark.parametrize("body", [{"payloads": ["a"], "priority": True}, {"payloads": ["a"], "priority": "5"},
                                  {"payloads": ["a"], "delay_s": "1"}])
def test_enqueue_other_json_type_is_422(client: TestClient, store: PersistentQStore, body: dict) -> None:
    """A boolean or string priority or delay gets 422 and puts no job."""
    assert_error(client.post("/api/jobs", json=body), 422)
    assert store.jobs() == []


@pytest.mark.parametrize("path, body", [
    ("/api/pool/scale", {"n_cons": 65}),
    ("/api/pool/scale", {"n_cons": -1}),
    ("/api/pool/scale", {"n_prod": "two"}),
    ("/api/pool/pause", {"kind": "cook"}),
    ("/api/pool/resume", {"kind": 3}),
])
def test_pool_bad_body_is_422(client: TestClient, path: str, body: dict) -> None:
    """A scale beyond 0 to 64 workers, or an unknown worker kind, gets 422."""
    client.post("/api/pool/start")

    assert_error(client.post(path, json=body), 422)
    pool = client.get("/api/pool").json()
    assert (pool["producers"], pool["consumers"], pool["paused"]) == (1, 1, [])


# The file pipeline: payloads name files in primary_path.


@pytest.fixture()
def file_client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app that runs the file pipeline, its pool not started."""
    config = make_config(tmp_path, consumer={"function": ""}, producer={"function": ""})
    with TestClient(create_app(config, start_pool=False), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.mark.parametrize("payload", ["../outside", "/etc/passwd", "a/b", "..", ".hidden", "x.out", "queue.sqlite3",
                                     "missing"])
def test_file_enqueue_rejects_names_outside_primary_path(file_client: TestClient, tmp_path: Path,
                                                         payload: str) -> None:
    """In the file pipeline a payload must name an existing input file inside primary_path."""
    (tmp_path / "outside").write_text("secret")

    assert_error(file_client.post("/api/jobs", json={"payloads": [payload]}), 422)
    assert file_client.app.state.dashboard.store.jobs() == []


def test_file_enqueue_accepts_existing_input(file_client: TestClient, tmp_path: Path) -> None:
    """A payload naming a file in primary_path is put."""
    (tmp_path / "data" / "report1").write_text("text\n")

    response = file_client.post("/api/jobs", json={"payloads": ["report1"]})

    assert response.status_code == 201, response.text


def test_file_requeue_renames_failed_input_back(file_client: TestClient, tmp_path: Path) -> None:
    """Requeueing a failed file job renames <name>.failed back; once the file is gone it gets 409."""
    store = file_client.app.state.dashboard.store
    data = tmp_path / "data"
    kept = failed_job(store, "kept")
    (data / f"kept{FAILED_SUFFIX}").write_text("x")
    removed = failed_job(store, "removed")

    assert file_client.post(f"/api/jobs/{kept}/requeue").status_code == 200
    assert (data / "kept").exists()
    assert_error(file_client.post(f"/api/jobs/{removed}/requeue"), 409, "removed")
    assert store.get(removed).state == JobState.FAILED


def test_app_with_own_pool_reads_after_stop(tmp_path: Path) -> None:
    """With a pool passed in, the API still reads the queue after the pool was stopped and started again."""
    config = make_config(tmp_path)
    pool = WorkerPool(config, consumer_function=lambda payload: payload)

    with TestClient(create_app(config, pool=pool), base_url=BASE_URL) as client:
        client.post("/api/pool/stop")
        after_stop = client.get("/api/counts")
        client.post("/api/jobs", json={"payloads": ["a"]})
        client.post("/api/pool/start")
        wait_until(lambda: client.get("/api/counts").json()["done"] == 1)

    assert after_stop.status_code == 200
    assert pool.running is False


# The database file vanishing under the app.


def test_deleted_database_is_503_and_puts_nothing(client: TestClient, store: PersistentQStore) -> None:
    """After the database file is deleted, reads and writes get 503 naming the restart, and no job goes to the lost file."""
    assert client.post("/api/jobs", json={"payloads": ["before"]}).status_code == 201
    database = client.app.state.dashboard.config.database_path
    for path in database.parent.glob(database.name + "*"):
        path.unlink()

    enqueue = client.post("/api/jobs", json={"payloads": ["after"]})
    counts = client.get("/api/counts")
    jobs = client.get("/api/jobs")

    assert_error(enqueue, 503, "deleted or replaced", "start it again")
    assert_error(counts, 503, "deleted or replaced")
    assert_error(jobs, 503, "deleted or replaced")
    assert not database.exists()


# Event streams.


def test_event_streams_share_one_read(tmp_path: Path) -> None:
    """Streams that ask for a snapshot at the same time with the same chart settings get one shared event."""
    app = create_app(make_config(tmp_path), start_pool=False)
    state = app.state.dashboard

    async def twenty_streams() -> list[str]:
        return await asyncio.gather(*(state.snapshot_event(interval_s=5, window_s=300) for _ in range(20)))

    try:
        events = asyncio.run(twenty_streams())
    finally:
        state.store.close()

    assert events[0].startswith("event: snapshot\ndata: {")
    assert all(event is events[0] for event in events)


def test_stream_wait_ends_on_closing(tmp_path: Path) -> None:
    """A stream waiting on a read or a pause stops waiting once the server begins to shut down."""
    app = create_app(make_config(tmp_path), start_pool=False)
    state = app.state.dashboard

    async def wait_while_closing() -> object:
        waiting = asyncio.ensure_future(state.until_closing(asyncio.sleep(60, result="slept")))
        await asyncio.sleep(0.05)
        state.closing.set()
        return await asyncio.wait_for(waiting, 5)

    try:
        result = asyncio.run(wait_while_closing())
    finally:
        state.store.close()

    assert result is None
