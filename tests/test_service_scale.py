"""Scale out: `tokengraft serve --no-worker` and two `tokengraft worker` processes that share
PostgreSQL and an S3 bucket (SeaweedFS) but no disk, each with its own data dir: jobs spread over
both, uploads and artifacts travel through the bucket, and a worker killed mid-upload leaves
nothing that a manifest lists; its job completes on the other worker.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import tiny
from sqlalchemy import select
from test_service_e2e import Server, download, tokengraft

from service.config import Settings
from service.models import Worker
from service.services import Services
from service.storage import open_storage

MiB = 2**20


def s3():  # noqa: ANN201 (a boto3 S3 client)
    """A client on the AWS environment as it is now (boto3's default session caches it)."""
    return boto3.session.Session().client("s3")


PREFIX = "scale"


def runner(services: Services, job_id: str) -> list[str]:
    """The workers that claimed the job, in order (its `running` state events)."""
    events = services.queue.events(job_id, 0)
    return [e.data["worker"] for e in events if e.data.get("status") == "running"]


def pid_of(services: Services, worker_id: str) -> int:
    with services.sessions() as s:
        return s.scalar(select(Worker.pid).where(Worker.id == worker_id))


def uploading(client, bucket: str, job_id: str) -> bool:  # noqa: ANN001 (a boto3 client)
    """Whether the job's first attempt has begun to reach the bucket: a multipart upload
    under way, or an object."""
    prefix = f"{PREFIX}/jobs/{job_id}/attempt-1/"
    if client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)["KeyCount"]:
        return True  # the first, small, files come before the checkpoint's weights
    return bool(client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads"))


def bucket_files(bucket: str, prefix: str) -> dict[str, bytes]:
    client = s3()
    found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in found}


def machine(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """A worker machine's settings: its own data dir, holding its own copy of the model
    store (models are provisioned per machine; uploads come from the bucket)."""
    own = settings.model_copy(update={"data_dir": tmp_path / name})
    shutil.copytree(settings.models_dir, own.models_dir)
    return own


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_without_a_shared_disk(
    settings: Settings, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"s3://{bucket}/{PREFIX}"
    # a checkpoint of ~100 MB, uploaded in 5 MiB parts: a multipart upload to kill a worker in
    tiny.model_dir(settings.models_dir / "big", tiny.byte_level(), intermediate_size=2**17)
    monkeypatch.setenv("TOKENGRAFT_S3_PART_BYTES", str(5 * MiB))
    machines = [machine(settings, tmp_path, f"machine{i}") for i in range(2)]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [  # started first: they take longest to start
        tokengraft("worker", "--storage", storage, settings=m, log=log)
        for m, log in zip(machines, logs, strict=True)
    ]
    monkeypatch.setenv("TOKENGRAFT_STORAGE", storage)  # the API's, as the environment gives it
    services = Services.build(settings)
    try:
        api = Server(settings, tmp_path, worker=False)
        try:
            both_started(services, workers)
            spread(api, services, machines, bucket)
            killed_mid_upload(api, services, workers, machines, bucket)
        finally:
            api.stop()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
        services.engine.dispose()


def both_started(services: Services, workers: list[subprocess.Popen]) -> None:
    """Wait until both workers are registered, so that jobs spread over both however long
    one takes to start (one alone would run them all)."""
    deadline = time.monotonic() + 120
    while services.queue.live_workers(services.settings.stale_seconds) < len(workers):
        assert all(w.poll() is None for w in workers), "a worker exited"
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)


def spread(api: Server, services: Services, machines: list[Settings], bucket: str) -> None:
    """Several jobs, on an uploaded tokenizer that only the API received: both workers run
    some, each fetched the upload from the bucket, and downloads match the manifest."""
    data = tiny.sentencepiece().backend_tokenizer.to_str().encode()
    tok_id = api.http.post("/tokenizers", files={"file": ("tokenizer.json", data)}).json()["id"]
    body = {"model": "tiny", "tokenizer": tok_id, "method": "subword"}
    ids = [api.http.post("/transplant", json=body).json()["id"] for _ in range(6)]
    jobs = [api.wait(i, timeout=180) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 6, jobs
    runners = [runner(services, i) for i in ids]
    assert all(len(r) == 1 for r in runners)
    assert len({r[0] for r in runners}) == 2, runners  # both workers ran jobs
    for m in machines:
        assert (m.uploads_dir / tok_id / "tokenizer.json").read_bytes() == data
        assert not m.jobs_dir.exists()  # nothing of a job is kept on a worker's disk
        assert not any((m.data_dir / "work").iterdir())

    files = api.http.get(f"/jobs/{ids[0]}/artifacts").json()["files"]
    big = max(files, key=lambda f: f["size"])
    url = f"/jobs/{ids[0]}/artifacts/{big['path']}"
    got = download(api.http, url, big["size"], chunk=big["size"] // 3 + 1)
    assert hashlib.sha256(got).hexdigest() == big["sha256"]
    stored = bucket_files(bucket, f"{PREFIX}/jobs/{ids[0]}/")
    assert stored[f"{PREFIX}/jobs/{ids[0]}/attempt-1/{big['path']}"] == got


def killed_mid_upload(
    api: Server,
    services: Services,
    workers: list[subprocess.Popen],
    machines: list[Settings],
    bucket: str,
) -> None:
    """SIGKILL the worker of a big job once its upload began: nothing of that attempt is ever
    listed, the job is requeued and completes on the other worker, and a sweep leaves nothing
    of the dead attempt in the bucket or on the dead worker's disk."""
    tok_id = api.http.get("/tokenizers").json()["uploads"][0]["id"]
    body = {"model": "big", "tokenizer": tok_id, "method": "subword"}
    job_id = api.http.post("/transplant", json=body).json()["id"]
    deadline, client = time.monotonic() + 120, s3()
    while not runner(services, job_id):  # who runs it, known before its upload begins
        assert time.monotonic() < deadline, "the job was not claimed"
        time.sleep(0.02)
    first = runner(services, job_id)[0]
    victim = next(w for w in workers if w.pid == pid_of(services, first))
    while not uploading(client, bucket, job_id):
        assert time.monotonic() < deadline, "the upload did not begin"
    victim.kill()
    victim.wait()
    assert services.queue.get(job_id).status == "running", "the kill came too late"
    assert api.http.get(f"/jobs/{job_id}/artifacts").status_code == 409

    job = api.wait(job_id, timeout=180)
    assert job["status"] == "succeeded" and job["attempt"] == 2, job
    second = runner(services, job_id)[1]
    assert second != first and services.queue.get(job_id).output_dir == "attempt-2"
    files = api.http.get(f"/jobs/{job_id}/artifacts").json()["files"]
    assert {f["path"] for f in files} >= {"model.safetensors", "config.json", "tokenizer.json"}
    prefix = f"{PREFIX}/jobs/{job_id}/attempt-2/"
    for f in files:
        data = client.get_object(Bucket=bucket, Key=prefix + f["path"])["Body"].read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["size"], f["sha256"])
        head = client.head_object(Bucket=bucket, Key=prefix + f["path"])
        assert head["Metadata"]["sha256"] == f["sha256"]

    dead = machines[workers.index(victim)]
    assert (dead.data_dir / "work" / job_id / "attempt-1").is_dir()  # what the kill left
    store = open_storage(dead.model_copy(update={"storage": f"s3://{bucket}/{PREFIX}"}))
    assert store.sweep(services.queue.live_outputs, 0) >= 1
    left = sorted(bucket_files(bucket, f"{PREFIX}/jobs/{job_id}/"))
    assert left == sorted(prefix + f["path"] for f in files)  # the dead attempt's are gone
    unfinished = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{PREFIX}/jobs/{job_id}/")
    assert not unfinished.get("Uploads")
    assert not (dead.data_dir / "work" / job_id).exists()
