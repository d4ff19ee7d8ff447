"""The service over real HTTP: `tokengraft serve` and `tokengraft worker` as processes.

End to end (upload, submit, ETag polling, SSE with replay, ranged downloads, loading the
result with transformers), the README's curl examples, a worker killed mid-job, and several
worker processes sharing PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tiny
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.config import Settings
from service.models import JobStatus
from service.services import Services

REPO = Path(__file__).resolve().parent.parent
FAST = {
    "TOKENGRAFT_HEARTBEAT_SECONDS": "0.3",
    "TOKENGRAFT_STALE_SECONDS": "3",
    "TOKENGRAFT_POLL_SECONDS": "0.2",
    "TOKENGRAFT_KEEPALIVE_SECONDS": "1",
    "HF_HUB_OFFLINE": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokengraft(*args: str, settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **FAST}
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        *args,
        "--data-dir",
        str(settings.data_dir),
        "--database-url",
        settings.url,
    ]
    if settings.corpora_dir is not None:
        cmd += ["--corpora-dir", str(settings.corpora_dir)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


class Server:
    def __init__(
        self,
        settings: Settings,
        tmp: Path,
        worker: bool,
        extra: tuple[str, ...] = (),
        port: int | None = None,  # another server's, to take its place
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        args = ["serve", "--port", str(self.port)] + ([] if worker else ["--no-worker"])
        args += list(extra)
        self.process = tokengraft(*args, settings=settings, log=self.log)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def wait_for_stage(self, job_id: str, stage: str, log: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get(f"/jobs/{job_id}").json()["progress"]["stage"] != stage:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def wait(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if JobStatus(job["status"]).terminal:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {job}\n{self.log.read_text()}")


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """`tokengraft serve` with its in-process worker on a free loopback port."""
    s = Server(settings, tmp_path, worker=True)
    yield s
    s.stop()


def sse(http: httpx.Client, url: str, last_event_id: str | None = None) -> list[dict]:
    """Every event of a stream until the server closes it."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, current = [], {}
    with http.stream("GET", url, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                current.setdefault("comment", line)
            else:
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def download(http: httpx.Client, url: str, size: int, chunk: int) -> bytes:
    """A file fetched in Range requests of `chunk` bytes, as a resuming client would."""
    data = b""
    while len(data) < size:
        part = http.get(url, headers={"Range": f"bytes={len(data)}-{len(data) + chunk - 1}"})
        assert part.status_code == 206, part.text
        data += part.content
    return data


def test_end_to_end_over_http(server: Server, settings: Settings, tmp_path: Path) -> None:
    http = server.http
    tok = (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    tok_id = http.post("/tokenizers", files={"file": ("tokenizer.json", tok)}).json()["id"]
    body = {"model": "tiny", "tokenizer": tok_id, "method": "subword", "eval_text": "fox"}
    submitted = http.post("/transplant", json=body)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]

    tag, not_modified = None, 0
    while True:
        response = http.get(f"/jobs/{job_id}", headers={"If-None-Match": tag} if tag else {})
        if response.status_code == 304:
            not_modified += 1
        else:
            tag, job = response.headers["etag"], response.json()
            if JobStatus(job["status"]).terminal:
                break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job

    events = sse(http, f"/jobs/{job_id}/events")
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"]) == {
        "status": "succeeded"
    }
    states = [json.loads(e["data"])["status"] for e in events if e.get("event") == "state"]
    assert states == ["queued", "running", "succeeded"]
    numbered = [e for e in events if "id" in e]
    middle = numbered[len(numbered) // 2]["id"]
    replay = sse(http, f"/jobs/{job_id}/events", last_event_id=middle)
    assert [e["id"] for e in replay if "id" in e] == [
        e["id"] for e in numbered if int(e["id"]) > int(middle)
    ]

    out = tmp_path / "downloaded"
    out.mkdir()
    for f in http.get(f"/jobs/{job_id}/artifacts").json()["files"]:
        data = download(http, f"/jobs/{job_id}/artifacts/{f['path']}", f["size"], chunk=4096)
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        (out / f["path"]).write_bytes(data)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Der Fuchs", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    print(f"304 responses while polling: {not_modified}")


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- curl-examples -->\n```bash\n(.*?)```", text, re.S)
    assert match, "README.md has no curl-examples block"
    return match.group(1)


def test_readme_curl_examples(server: Server, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_bytes(
        (settings.tokenizers_dir / "sp" / "tokenizer.json").read_bytes()
    )
    tiny.corpus(settings.corpora_dir / "train.txt")  # the hypernetwork example's text
    env = {**os.environ, "TG": server.url, "MODEL": "tiny"}
    script = "set -euo pipefail\n" + readme_block()
    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with tarfile.open(tmp_path / "checkpoint.tar") as archive:
        names = archive.getnames()
    assert any(n.endswith("/model.safetensors") for n in names), names


def test_a_killed_worker_s_job_is_requeued_and_completes(
    settings: Settings, tmp_path: Path
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt", lines=2500)
    api = Server(settings, tmp_path, worker=False)
    services = Services.build(settings)
    try:
        body = {"model": "tiny", "tokenizer": "sp", "method": "subword", "eval_text": "long"}
        job_id = api.http.post("/transplant", json=body).json()["id"]
        first = tokengraft("worker", settings=settings, log=tmp_path / "worker1.log")
        api.wait_for_stage(job_id, "evaluate", tmp_path / "worker1.log")
        first.kill()  # SIGKILL mid-evaluation: no chance to clean up
        first.wait()
        killed_at = time.monotonic()
        job_dir = settings.jobs_dir / job_id
        assert any(p.name.endswith(".tmp") for p in job_dir.iterdir())  # a half-written attempt
        second = tokengraft("worker", settings=settings, log=tmp_path / "worker2.log")
        try:
            job = api.wait(job_id, timeout=240)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
        recovered = time.monotonic() - killed_at
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        assert sorted(p.name for p in job_dir.iterdir()) == ["attempt-2"]
        files = api.http.get(f"/jobs/{job_id}/artifacts").json()["files"]
        for f in files:
            data = (job_dir / "attempt-2" / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(files) == len(list((job_dir / "attempt-2").rglob("*")))
        states = [e.data["status"] for e in services.queue.events(job_id, 0) if e.kind == "state"]
        assert states == ["queued", "running", "queued", "running", "succeeded"]
        print(f"killed worker's job recovered and finished {recovered:.1f} s after the kill")
    finally:
        services.engine.dispose()
        api.stop()


def counted(log: Path, line: str, times: int, timeout: float = 60) -> None:
    """Wait until a process's log holds `line` `times` times."""
    deadline = time.monotonic() + timeout
    while log.read_text().count(line) < times:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


def test_sigterm_finishes_the_job_and_a_second_gives_it_back(
    settings: Settings, tmp_path: Path
) -> None:
    tiny.corpus(settings.corpora_dir / "long.txt", lines=2500)
    # Long enough that the evaluation is still running when the second signal lands; a job
    # given back stops at the next progress tick, so the test does not wait for it all.
    tiny.corpus(settings.corpora_dir / "longer.txt", lines=50_000)
    api = Server(settings, tmp_path, worker=False)
    body = {"model": "tiny", "tokenizer": "sp", "method": "subword"}
    try:
        for signals, text, expected in (
            (1, "long", ("succeeded", 1)),
            (2, "longer", ("queued", 1)),  # given back: the attempt it made is shown
        ):
            job_id = api.http.post("/transplant", json=body | {"eval_text": text}).json()["id"]
            log = tmp_path / f"worker-{text}.log"
            worker = tokengraft("worker", settings=settings, log=log)
            api.wait_for_stage(job_id, "evaluate", log)
            for sent in range(1, signals + 1):
                worker.send_signal(signal.SIGTERM)
                # the next only once this one is counted (one still pending absorbs the next)
                counted(log, "signal 15: ", sent)
            assert worker.wait(timeout=120) == 0
            job = api.http.get(f"/jobs/{job_id}").json()
            assert (job["status"], job["attempt"]) == expected, job
            if expected[0] == "queued":
                assert not (settings.jobs_dir / job_id).exists()  # nothing left behind
                api.http.post(f"/jobs/{job_id}/cancel")
    finally:
        api.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_worker_processes_share_postgresql(settings: Settings, tmp_path: Path) -> None:
    api = Server(settings, tmp_path, worker=False)
    services = Services.build(settings)
    workers = [
        tokengraft("worker", settings=settings, log=tmp_path / f"worker{i}.log") for i in range(3)
    ]
    try:
        body = {"model": "tiny", "tokenizer": "sp", "method": "subword"}
        ids = [api.http.post("/transplant", json=body).json()["id"] for _ in range(12)]
        start = time.monotonic()
        jobs = [api.wait(i, timeout=300) for i in ids]
        elapsed = time.monotonic() - start
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
        api.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 12
    assert [j["attempt"] for j in jobs] == [1] * 12
    runners = []
    for job_id in ids:
        running = [e for e in services.queue.events(job_id, 0) if e.data.get("status") == "running"]
        assert len(running) == 1  # claimed exactly once
        runners.append(running[0].data["worker"])
    services.engine.dispose()
    print(
        f"12 jobs on 3 worker processes in {elapsed:.1f} s; jobs per worker: "
        f"{sorted(runners.count(w) for w in set(runners))}"
    )


def children(pid: int) -> set[int]:
    """The direct children of a process, from /proc (every thread's list)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def served_connections(pid: int, port: int) -> int:
    """Established TCP connections to `port` that process `pid` holds: requests it accepted."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += local_port == port and state == "01" and inode in inodes  # 01: ESTABLISHED
    return count


def test_serve_processes_share_the_socket_and_stop_together(
    settings: Settings, tmp_path: Path
) -> None:
    api = Server(settings, tmp_path, worker=False, extra=("--processes", "2"))
    try:
        body = {"model": "tiny", "tokenizer": "sp", "method": "subword"}
        job_id = api.http.post("/transplant", json=body).json()["id"]
        processes = children(api.process.pid)
        # Keep-alive connections stay with the process that accepted them: open rounds of them
        # until two processes hold some (the kernel wakes both on the shared socket; the
        # second may still be starting when the first answers).
        serving: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            clients = [httpx.Client(base_url=api.url) for _ in range(8)]
            try:
                for client in clients:
                    assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
                serving |= {p for p in processes if served_connections(p, api.port)}
            finally:
                for client in clients:
                    client.close()
            if len(serving) >= 2:
                break
        assert len(serving) == 2, (processes, serving, api.log.read_text())
    finally:
        api.stop()
    assert api.process.returncode == 0, api.log.read_text()
    # the API processes are joined before the parent exits; multiprocessing's resource
    # tracker (a child too) ends when it sees the parent's end of its pipe close
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in processes - serving):
        assert time.monotonic() < deadline, f"outlived SIGTERM: {processes - serving}"
        time.sleep(0.1)
    for pid in serving:
        assert not Path(f"/proc/{pid}").exists(), f"API process {pid} outlived SIGTERM"


def test_serve_processes_need_no_worker(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    data = ["--data-dir", str(settings.data_dir), "--database-url", settings.url]
    assert main(["serve", "--processes", "2", *data]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--no-worker" in error, error
