"""Dashboard polling: `GET /jobs/{id}` under wrk on loopback, 16 connections.

Cases, on SQLite and PostgreSQL: a full read (200) and a conditional read (`If-None-Match`
with the current ETag: 304) of one job, and full reads spread at random over 200 jobs, with no
job running; on the embedded default (`tokengraft serve`,
SQLite, its own worker) the same two while a transplant runs. Prints a table and writes
bench/out/polling.json.

    .venv/bin/python bench/polling.py [--seconds 15] [--connections 16] [--pg URL]

wrk comes from Debian's package (`apt-get install wrk`). The running case submits a transplant
of the bundled model to the bundled tokenizer with a refine of a few minutes, on `en.train`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CORPORA = ROOT.parent / "shared" / "corpora"
TOKENGRAFT = [str(ROOT / ".venv" / "bin" / "tokengraft")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_pg(url: str, name: str) -> str:
    """A new empty database next to `url`'s: the bench never touches the tests' tables."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


class Server:
    def __init__(
        self, data: Path, database_url: str | None, worker: bool, extra: Sequence[str] = ()
    ) -> None:
        """`extra`: more flags for `tokengraft serve` (bench/load.py: --processes, --storage)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*TOKENGRAFT, "serve", "--port", str(self.port), "--data-dir", str(data)]
        cmd += ["--database-url", database_url] if database_url else []
        cmd += [] if worker else ["--no-worker"]
        cmd += list(extra)
        env = {**os.environ, "TOKENGRAFT_CORPORA_DIR": str(CORPORA)}
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def submit(server: Server, refine_minutes: float | None) -> str:
    body: dict = {"model": "smollm2-135m", "tokenizer": "smollm2-135m", "method": "subword"}
    if refine_minutes:
        body["refine"] = {"texts": ["en.train"], "minutes": refine_minutes}
    r = httpx.post(f"{server.url}/transplant", json=body, timeout=600)
    r.raise_for_status()
    return r.json()["id"]


def wrk(
    url: str, seconds: int, connections: int, etag: str | None, script: Path | None = None
) -> dict:
    threads = min(2, connections)  # wrk refuses more threads than connections
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if etag:
        cmd[1:1] = ["-H", f"If-None-Match: {etag}"]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non_2xx_3xx": int(errors.group(1)) if errors else 0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def measure(server: Server, job_id: str, args: argparse.Namespace, label: str) -> list[dict]:
    url = f"{server.url}/jobs/{job_id}"
    etag = httpx.get(url).headers["ETag"]
    rows = []
    for case, tag in (("200", None), ("304", etag)):
        row = {"case": label, "response": case, **wrk(url, args.seconds, args.connections, tag)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def spread(server: Server, args: argparse.Namespace, label: str, jobs: int = 200) -> dict:
    """Polls spread at random over `jobs` jobs: what a per-job view cannot absorb."""
    ids = [submit(server, None) for _ in range(jobs)]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write("ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n")
        lua.write(
            'request = function() return wrk.format("GET", "/jobs/" .. '
            "ids[math.random(#ids)]) end\n"
        )
    row = {
        "case": f"{label}, {jobs} jobs at random",
        "response": "200",
        **wrk(server.url, args.seconds, args.connections, None, Path(lua.name)),
    }
    os.unlink(lua.name)
    print(json.dumps(row), flush=True)
    return row


def idle(database_url: str | None, label: str, args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data), database_url, worker=False)
        try:
            rows = measure(server, submit(server, None), args, label)
            return rows + [spread(server, args, label)]
        finally:
            server.stop()


def running(args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data), None, worker=True)
        try:
            job = submit(server, refine_minutes=3)
            deadline = time.monotonic() + 300
            while httpx.get(f"{server.url}/jobs/{job}").json()["status"] == "queued":
                if time.monotonic() > deadline:
                    raise RuntimeError("the job never started")
                time.sleep(0.5)
            time.sleep(5)  # into the transplant proper
            rows = measure(server, job, args, "sqlite, embedded worker running a job")
            status = httpx.get(f"{server.url}/jobs/{job}").json()
            print(f"job during the run: {status['status']} {status['progress']}", flush=True)
            return rows
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    rows = idle(None, "sqlite, no job running", args)
    rows += idle(fresh_pg(args.pg, "tokengraft_polling"), "postgresql, no job running", args)
    rows += running(args)
    print("\n| case | response | polls/s | p50 ms | p99 ms | non-2xx/3xx |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['response']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['non_2xx_3xx']} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "polling.json").write_text(json.dumps({"label": args.label, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
