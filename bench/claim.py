"""Time from `POST /transplant` to a worker claiming the job, on PostgreSQL, with and without
LISTEN/NOTIFY wake-ups.

`tokengraft serve --no-worker` and one or more idle `tokengraft worker` processes share a fresh
PostgreSQL database. Jobs (a tiny Llama from tests/tiny.py onto a tiny SentencePiece tokenizer:
each runs in about a second, so the workers are idle again long before the next) are submitted
one at a time: each after the previous finished and then a random pause of 0.3 s to 0.3 s plus
twice `poll_seconds`, so that a submission falls anywhere in a polling worker's cycle. For
each job:

- enqueue -> claim: the job's `created_at` (stamped by the API in the transaction that queues
  it) to its `started_at` (stamped by the worker in the transaction that claims it), both read
  from the jobs table afterwards: database timestamps, one machine's clock;
- POST answer -> claim: the moment the client had the 202 (this process's clock) to
  `started_at`; with NOTIFY it can be negative, the claim committing before the answer arrives.

With `notify` on (the default), an idle worker LISTENs and wakes at the enqueue's commit; off
(`TOKENGRAFT_NOTIFY=0`), it polls every `poll_seconds` (1.0 by default).

Beside, for docs/scaling.md: what idle workers cost the database (transactions a second from
`pg_stat_database`, connections from `pg_stat_activity`), the same for one running job (a tiny
transplant's refine stage), and the claim query's time on a table of 200,000 finished jobs
with the newest queued, without and with a partial index on queued jobs.

    .venv/bin/python bench/claim.py [--jobs 20] [--workers 1,2] [--pg URL]
    .venv/bin/python bench/claim.py --table-only     # the table from bench/out/claim.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from common import OUT, REPO
from load import beside
from polling import TOKENGRAFT, Server, fresh_pg
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from service.config import Settings
from service.db import make_engine
from service.migrate import upgrade
from service.models import Job, JobEvent
from service.queue import oldest_queued

sys.path.insert(0, str(REPO / "tests"))
import tiny  # noqa: E402 (the tests' tiny model and tokenizer)

RESULTS = OUT / "claim.jsonl"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET_P50_MS = 200.0  # with NOTIFY
BODY = {"model": "tiny", "tokenizer": "sp", "method": "subword"}
Record = Callable[[dict], None]


def stores(data: Path) -> None:
    """A model store with the tiny Llama "tiny" and a tokenizer store with "sp"."""
    tiny.model_dir(data / "models" / "tiny", tiny.byte_level())
    tiny.sentencepiece().save_pretrained(data / "tokenizers" / "sp")


@contextmanager
def workers(data: Path, url: str, count: int) -> Iterator[None]:
    """`count` idle `tokengraft worker` processes, stopped with SIGTERM afterwards."""
    command = [*TOKENGRAFT, "worker", "--data-dir", str(data), "--database-url", url]
    started = [subprocess.Popen(command, stderr=subprocess.DEVNULL) for _ in range(count)]
    try:
        yield
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(url: str, count: int, timeout: float = 120) -> None:
    """Until `count` workers beat (GET /readyz counts the live ones)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/readyz")
        if answer.status_code == 200 and answer.json()["live_workers"] >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} workers did not come up")


def finished(url: str, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish")


def submit(url: str) -> tuple[str, datetime]:
    """Queue a job; its id and when the 202 arrived."""
    answer = httpx.post(f"{url}/transplant", json=BODY, timeout=60).raise_for_status()
    return answer.json()["id"], datetime.now(UTC)


def stamps(database_url: str, ids: list[str]) -> dict[str, tuple[datetime, datetime]]:
    """Each job's (created_at, started_at) from the jobs table."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as c:
            query = select(Job.id, Job.created_at, Job.started_at).where(Job.id.in_(ids))
            return {row.id: (row.created_at, row.started_at) for row in c.execute(query)}
    finally:
        engine.dispose()


TRANSACTIONS = text(
    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :name"
)
CONNECTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
)


def activity(database_url: str) -> tuple[int, int]:
    """(transactions committed or rolled back so far, connections open now) in the database,
    this measurement's own connection left out."""
    engine = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = {"name": make_url(database_url).database}
    try:
        with engine.connect() as c:
            c.execute(text("SELECT pg_stat_clear_snapshot()"))
            done = c.execute(TRANSACTIONS, name).scalar_one()
            return int(done), int(c.execute(CONNECTIONS, name).scalar_one())
    finally:
        engine.dispose()


def idle_load(database_url: str, api_connections: int, count: int, seconds: float) -> dict:
    """What `count` idle workers (and the idle API) cost the database: transactions a second
    over `seconds` (steady state: the statistics' flush delay cancels out) and connections
    per worker (the API's counted before the workers started)."""
    before, _ = activity(database_url)
    time.sleep(seconds)
    after, connections = activity(database_url)
    return {
        "idle_tx_per_s": round((after - before - 2) / seconds, 2),  # less our two reads
        "connections": connections,
        "connections_per_worker": round((connections - api_connections) / count, 2),
    }


def series(args: argparse.Namespace, notify: bool, count: int, record: Record) -> None:
    """One configuration: a fresh database, the API, `count` workers, `args.jobs` jobs."""
    os.environ["TOKENGRAFT_NOTIFY"] = "1" if notify else "0"
    poll = Settings().poll_seconds
    where = {"notify": notify, "workers": count, "poll_seconds": poll}
    with tempfile.TemporaryDirectory(prefix="tokengraft-claim-") as folder:
        data = Path(folder)
        stores(data)
        url = fresh_pg(args.pg, "tokengraft_claim")
        server = Server(data, url, worker=False)
        try:
            httpx.get(f"{server.url}/jobs").raise_for_status()  # the API's pool opens
            api_connections = activity(url)[1]
            with workers(data, url, count):
                wait_ready(server.url, count)
                for _ in range(count):  # the first job of a worker imports the engine
                    finished(server.url, submit(server.url)[0])
                time.sleep(2)  # back to idle
                load = idle_load(url, api_connections, count, args.idle_seconds)
                record({"kind": "idle", **where, "api_connections": api_connections, **load})
                answers = {}
                for _ in range(args.jobs):
                    time.sleep(random.uniform(0.3, 0.3 + 2 * poll))  # anywhere in a cycle
                    job_id, answered = submit(server.url)
                    answers[job_id] = answered
                    job = finished(server.url, job_id)
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} ended {job['status']}")
        finally:
            server.stop()
        for job_id, (created, started) in stamps(url, list(answers)).items():
            enqueue_ms = (started - created).total_seconds() * 1000
            answer_ms = (started - answers[job_id]).total_seconds() * 1000
            row = {"kind": "job", **where, "job": job_id}
            row |= {"enqueue_to_claim_ms": round(enqueue_ms, 1)}
            row |= {"answer_to_claim_ms": round(answer_ms, 1)}
            record(row)


def running_load(args: argparse.Namespace, record: Record) -> None:
    """What one running job costs the database: a tiny transplant with a refine (a minute of
    steps, each a progress tick at most once a second), measured in its refine stage."""
    os.environ["TOKENGRAFT_NOTIFY"] = "1"
    with tempfile.TemporaryDirectory(prefix="tokengraft-claim-") as folder:
        data = Path(folder)
        stores(data)
        (data / "corpora").mkdir()
        tiny.corpus(data / "corpora" / "train.txt", lines=2500)
        body = BODY | {"refine": {"texts": ["train"], "minutes": 1}}
        url = fresh_pg(args.pg, "tokengraft_claim")
        os.environ["TOKENGRAFT_CORPORA_DIR"] = str(data / "corpora")  # the worker's too
        server = Server(data, url, worker=False, extra=["--corpora-dir", str(data / "corpora")])
        try:
            with workers(data, url, 1):
                wait_ready(server.url, 1)
                answer = httpx.post(f"{server.url}/transplant", json=body, timeout=60)
                job_id = answer.raise_for_status().json()["id"]
                _wait_stage(server.url, job_id, "refine")
                before, _ = activity(url)
                events = _events(url, job_id)
                time.sleep(args.idle_seconds)
                after, connections = activity(url)
                ticks = (_events(url, job_id) - events) / args.idle_seconds
                httpx.post(f"{server.url}/jobs/{job_id}/cancel")
                finished(server.url, job_id)
        finally:
            server.stop()
            del os.environ["TOKENGRAFT_CORPORA_DIR"]
    row = {"kind": "running", "tx_per_s": round((after - before - 2) / args.idle_seconds, 2)}
    row |= {"events_per_s": round(ticks, 2), "connections": connections}
    record(row)


def _wait_stage(url: str, job_id: str, stage: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/jobs/{job_id}").json()["progress"]["stage"] != stage:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} never reached {stage}")
        time.sleep(0.2)


def _events(database_url: str, job_id: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as c:
            query = select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)
            return int(c.execute(query).scalar_one())
    finally:
        engine.dispose()


HISTORY = text(
    "INSERT INTO jobs (id, kind, status, version, request, request_hash, attempt, "
    "cancel_requested, fraction, created_at) SELECT md5(g::text), 'transplant', 'succeeded', "
    "1, '{}', '', 1, false, 1, timestamp '2026-01-01' + (g || ' seconds')::interval "
    "FROM generate_series(1, :n) g"
)
QUEUE_NEWEST = text(
    "UPDATE jobs SET status = CASE WHEN id IN (SELECT id FROM jobs ORDER BY created_at DESC "
    "LIMIT :n) THEN 'queued' ELSE 'succeeded' END"
)
BEFORE_INDEX = "0003"  # the schema before migration 0004 added ix_jobs_queued


def claim_plan(args: argparse.Namespace, record: Record, history: int = 200_000) -> None:
    """The claim's query (`queue.oldest_queued`, as `Queue.claim` locks it on PostgreSQL) on a
    table with a long history, the queued jobs being the newest, on the schema before the
    queued-only index (migration 0004) and after it: EXPLAIN ANALYZE's execution time."""
    url = fresh_pg(args.pg, "tokengraft_claim")
    upgrade(url, BEFORE_INDEX)
    engine = create_engine(url)
    query = oldest_queued().with_for_update(skip_locked=True)
    sql = query.compile(engine, compile_kwargs={"literal_binds": True})
    explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
    try:
        with engine.begin() as c:
            c.execute(HISTORY, {"n": history})
        for index in (False, True):
            if index:
                upgrade(url)
            for queued in (1000, 100, 1):
                with engine.begin() as c:
                    c.execute(QUEUE_NEWEST, {"n": queued})
                    c.execute(text("ANALYZE jobs"))
                with engine.begin() as c:
                    ms = c.execute(text(explain)).scalar_one()[0]["Execution Time"]
                row = {"kind": "plan", "history": history, "queued": queued}
                record(row | {"partial_index": index, "claim_ms": round(ms, 2)})
    finally:
        engine.dispose()


# --- the table -----------------------------------------------------------------------------
def _spread(values: list[float]) -> str:
    """p50 / p90 / max in ms."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.0f} / {p90:.0f} / {ordered[-1]:.0f}"


def _config(row: dict) -> tuple[bool, int, float]:
    return row["notify"], row["workers"], row["poll_seconds"]


def table(rows: list[dict]) -> str:
    jobs = [r for r in rows if r["kind"] == "job"]
    idle = {_config(r): r for r in rows if r["kind"] == "idle"}
    configs = list(dict.fromkeys(_config(r) for r in jobs))
    lines = [
        "| NOTIFY | idle workers | poll_seconds | jobs | enqueue → claim ms (p50 / p90 / max) "
        "| POST answer → claim ms (p50 / p90 / max) | target p50 < 200 ms "
        "| idle: transactions/s | connections per worker |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for notify, count, poll in configs:
        mine = [r for r in jobs if _config(r) == (notify, count, poll)]
        enqueue = [r["enqueue_to_claim_ms"] for r in mine]
        answer = [r["answer_to_claim_ms"] for r in mine]
        target = "—"
        if notify:
            target = "holds" if statistics.median(enqueue) < TARGET_P50_MS else "**misses**"
        load = idle.get((notify, count, poll), {})
        lines.append(
            f"| {'on' if notify else 'off'} | {count} | {poll:g} | {len(mine)} | "
            f"{_spread(enqueue)} | {_spread(answer)} | {target} | "
            f"{load.get('idle_tx_per_s', '—')} | {load.get('connections_per_worker', '—')} |"
        )
    running = [r for r in rows if r["kind"] == "running"]
    if running:
        r = running[-1]
        lines.append(
            f"\nOne running job (refine stage), one worker and the API: {r['tx_per_s']} "
            f"transactions/s, {r['events_per_s']} job_events rows/s, {r['connections']} "
            "connections."
        )
    return "\n".join(lines) + plans(rows)


def plans(rows: list[dict]) -> str:
    """The claim's cost by queue length, with and without the partial index."""
    found = [r for r in rows if r["kind"] == "plan"]
    if not found:
        return ""
    head = "| jobs in history | queued (the newest) | claim ms, schema 0003 | with migration 0004"
    lines = ["", "", head + " (ix_jobs_queued) |"]
    lines.append("|---|---|---|---|")
    for queued in dict.fromkeys(r["queued"] for r in found):
        ms = {r["partial_index"]: r["claim_ms"] for r in found if r["queued"] == queued}
        history = found[0]["history"]
        lines.append(f"| {history:,} | {queued:,} | {ms.get(False)} | {ms.get(True)} |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------
def benchmark(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("w") as out:

        def record(row: dict) -> None:
            rows.append(row)
            out.write(json.dumps(row) + "\n")
            out.flush()

        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        record({"kind": "run", "uptime": uptime, **beside()})
        for notify in (True, False):
            for count in args.workers:
                series(args, notify, count, record)
                print(table(rows).splitlines()[-1], flush=True)
        running_load(args, record)
        claim_plan(args, record)
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        record({"kind": "end", "uptime": uptime, **beside()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs measured per configuration")
    parser.add_argument("--workers", default="1,2", help="idle worker processes, e.g. 1,2")
    parser.add_argument(
        "--idle-seconds", type=float, default=30, help="how long the idle load is measured"
    )
    parser.add_argument("--pg", default=PG, help="a PostgreSQL URL; a database of its own is made")
    parser.add_argument(
        "--table-only", action="store_true", help=f"rebuild the table from {RESULTS}"
    )
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.table_only:
        rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    else:
        rows = benchmark(args)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
