"""The worker: claim a job, run it (a transplant, or a hypernetwork's training) with progress
and cancellation, record the outcome. Many workers (threads, processes, machines) can share one
database.

Errors are classified: bad input, out-of-memory and a full disk fail at once; an object store
that does not answer puts the job back for later, the waits doubling, without using up its
attempts; anything else is treated as transient and retried up to `max_attempts`. What a
client sees of an error never holds a server path. A lost worker's job is requeued by any
other worker's reaper once its heartbeat is `stale_seconds` old. The same periodic pass
deletes what the retention settings say is too old or too much, and sweeps the storage of
files that no job records or runs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import torch

from hypernet.errors import Cancelled, InputError, is_panic
from hypernet.transplant import TransplantRequest, transplant

from . import hypernets, refine, wakeup
from .catalog import Catalog, redact
from .config import Settings
from .models import JobKind, JobStatus, utcnow
from .queue import Claim, Queue
from .storage import Storage, StoreUnavailable, attempt_dir, causes, out_of_space

log = logging.getLogger("tokengraft.worker")

NO_SPACE = "the server ran out of disk space while writing the checkpoint; free space and resubmit"
STORE_DOWN = "the object store did not answer"
RETAIN_EVERY = 60.0  # seconds between retention passes; one worker of the fleet takes each
RETAIN_BATCH = 50  # jobs deleted at most per pass, so that a pass never holds up the beats
# stale periods an attempt's files are left alone: a worker presumed dead may still be writing
SWEEP_GRACE = 3


def build_request(catalog: Catalog, request: dict, out: Path) -> TransplantRequest:
    """The library's request from the API's, every name resolved by the catalog; the report
    names the inputs as the user did, never by the server's paths."""
    spec = request.get("refine")
    keys = ("model", "tokenizer", "donor", "eval_text", "hypernet")
    names: dict = {k: request[k] for k in keys if request.get(k)}
    if spec:
        names["refine_texts"] = list(spec["texts"])
    return TransplantRequest(
        model=catalog.model(request["model"]),
        tokenizer=catalog.tokenizer(request["tokenizer"]),
        out=out,
        method=request.get("method"),
        options=request.get("options") or {},
        donor=catalog.model(request["donor"]) if request.get("donor") else None,
        eval_text=catalog.text(request["eval_text"]) if request.get("eval_text") else None,
        eval_bytes=request.get("eval_bytes"),
        hypernet=str(catalog.hypernet(request["hypernet"])) if request.get("hypernet") else None,
        hypernets=catalog.hypernet_roots,
        refine=refine.config(spec) if spec else None,
        refine_texts=refine.paths(catalog, spec) if spec else [],
        names=names,
    )


class _Job(Protocol):
    """One attempt at a job of some kind."""

    def run(
        self, progress: Callable[..., None], cancelled: Callable[[], bool]
    ) -> tuple[dict, Path | None]:
        """The job's result and the local folder of its artifacts, for the storage to publish
        (None: it has no artifacts)."""

    def cleanup(self, status: JobStatus | None) -> None:
        """Remove what the attempt wrote and no longer needs, once the job was left in
        `status` (None: a newer attempt owns it)."""


class _Transplant:
    """A transplant attempt writes its checkpoint into the storage's workspace, published as
    the job's artifacts once complete and recorded when it succeeds, removed otherwise."""

    def __init__(self, catalog: Catalog, storage: Storage, claim: Claim) -> None:
        self.catalog, self.storage, self.claim = catalog, storage, claim

    def run(
        self, progress: Callable[..., None], cancelled: Callable[[], bool]
    ) -> tuple[dict, Path]:
        """The workspace is made here, not at construction, so that failing to make it (an
        object store that is away) is the attempt's failure, recorded and retried."""
        out = self.storage.workspace(self.claim.job_id, self.claim.attempt)
        request = build_request(self.catalog, self.claim.request, out)
        return {"report": transplant(request, progress, cancelled).to_dict()}, out

    def cleanup(self, status: JobStatus | None) -> None:
        if status != JobStatus.succeeded:
            self.storage.remove(self.claim.job_id, attempt_dir(self.claim.attempt))


class _Ticks:
    """Which progress ticks reach the database: about one a second, but never a stage's first
    tick, its first tick with detail (refine's first loss) or its last, so that no stage goes
    unseen and its final numbers are never dropped."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.stage: str | None = None
        self.at = 0.0
        self.detailed = False

    def keep(self, stage: str, fraction: float, detail: dict | None) -> bool:
        now = time.monotonic()
        if stage != self.stage:  # a new stage: its first tick always goes
            self.stage, self.at, self.detailed = stage, -math.inf, False
        first_detail = detail is not None and not self.detailed
        if not (first_detail or fraction >= 1.0 or now - self.at >= self.every):
            return False
        self.at, self.detailed = now, self.detailed or detail is not None
        return True


class _Beat(threading.Thread):
    """Heartbeats for one running job every `every` seconds, and a read of its cancel flag
    every `poll` seconds in between, so that a cancel takes effect within about `poll`;
    notices a lost claim too."""

    def __init__(self, queue: Queue, claim: Claim, every: float, poll: float) -> None:
        super().__init__(daemon=True, name=f"beat-{claim.job_id[:8]}")
        self.queue, self.claim, self.every, self.poll = queue, claim, every, min(poll, every)
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        beaten = time.monotonic()
        while not self.done.wait(self.poll):
            try:
                if time.monotonic() - beaten >= self.every:
                    ours, cancel = self.queue.heartbeat(self.claim)
                    self.queue.worker_beat(self.claim.worker_id)
                    beaten = time.monotonic()
                else:
                    ours, cancel = self.queue.cancel_requested(self.claim)
            except Exception:  # a database blip: try again at the next beat
                log.warning("heartbeat failed for job %s", self.claim.job_id, exc_info=True)
                continue
            if not ours:
                self.lost.set()
            if cancel:
                self.cancel.set()


def classify(e: Exception) -> tuple[str, str, bool]:
    """(error type, detail for the client, retry?): the request's fault and exhausted
    resources fail at once; anything else may be transient (a store that is away is put off
    by `Worker._deferred`)."""
    if out_of_space(e):
        return "no_space", NO_SPACE, False
    if any(isinstance(c, StoreUnavailable) for c in causes(e)):
        return "store_unavailable", STORE_DOWN, True
    if isinstance(e, InputError):
        return "invalid_input", str(e), False
    if isinstance(e, MemoryError | torch.OutOfMemoryError):
        return "out_of_memory", str(e) or "out of memory", False
    return "internal", f"{type(e).__name__}: {e}", True


def backoff(settings: Settings, deferrals: int) -> float | None:
    """Seconds before the next try of a job already put off `deferrals` times: doubling from
    `store_retry_seconds` up to `store_retry_max_seconds`; None once the waits so far add up
    to `store_retry_total_seconds` (the store is not coming back soon: an operator's matter)."""

    def wait(k: int) -> float:
        first, most = settings.store_retry_seconds, settings.store_retry_max_seconds
        return min(first * 2.0 ** min(k, 64), most)

    waited = sum(wait(k) for k in range(deferrals))
    return None if waited >= settings.store_retry_total_seconds else wait(deferrals)


class Worker:
    def __init__(
        self, settings: Settings, queue: Queue, storage: Storage, catalog: Catalog
    ) -> None:
        self.settings, self.queue, self.storage, self.catalog = settings, queue, storage, catalog
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.stop = threading.Event()  # stop claiming; finish the current job
        self.abandon = threading.Event()  # give the current job back at its next progress tick

    def run(self) -> None:
        self.queue.register(self.id, socket.gethostname(), os.getpid(), self.device)
        log.info("worker %s started on %s", self.id, self.device)
        idle = wakeup.for_database(self.settings.url, self.settings.notify, self.stop)
        try:
            beaten = retained = -math.inf
            while not self.stop.is_set():
                try:
                    if time.monotonic() - beaten >= self.settings.heartbeat_seconds:
                        self._beat_and_reap()
                        beaten = time.monotonic()
                    if time.monotonic() - retained >= RETAIN_EVERY:
                        if self.queue.take_turn("retain", timedelta(seconds=RETAIN_EVERY)):
                            self.retain()
                        retained = time.monotonic()
                    claim = self.queue.claim(self.id)
                    if claim is not None:
                        self.run_job(claim)
                        continue
                except Exception:  # the database went away: its job is reaped if need be
                    log.exception("worker %s: database error; retrying", self.id)
                idle.wait(self.settings.poll_seconds)
        finally:
            idle.close()
            self.queue.worker_beat(self.id, stopped=True)
            log.info("worker %s stopped", self.id)

    def _beat_and_reap(self) -> None:
        self.queue.worker_beat(self.id)
        for job_id in self.queue.reap(self.settings.stale_seconds):
            log.warning("requeued job %s: its worker stopped beating", job_id)

    def run_job(self, claim: Claim) -> JobStatus | None:
        log.info("job %s (%s) attempt %d", claim.job_id, claim.kind, claim.attempt)
        settings = self.settings
        beat = _Beat(self.queue, claim, settings.heartbeat_seconds, settings.cancel_poll_seconds)
        beat.start()
        ticks = _Ticks()

        def progress(
            stage: str, fraction: float, detail: dict | None = None, always: bool = False
        ) -> None:
            """`always`: a tick the throttle may not drop (a held-out evaluation)."""
            if (always or ticks.keep(stage, fraction, detail)) and not self.queue.progress(
                claim, stage, fraction, None, detail
            ):
                beat.lost.set()

        def cancelled() -> bool:
            return beat.cancel.is_set() or beat.lost.is_set() or self.abandon.is_set()

        job = self._job(claim)
        try:
            status = self._outcome(claim, job, beat, progress, cancelled)
        finally:
            beat.done.set()
        try:
            job.cleanup(status)
        except Exception:  # the outcome is recorded; what is left is swept later
            log.warning(
                "job %s: could not clean up attempt %d", claim.job_id, claim.attempt, exc_info=True
            )
        return status

    def _job(self, claim: Claim) -> _Job:
        if claim.kind == JobKind.hypernet:
            return hypernets.Training(self.catalog, self.storage, claim)
        return _Transplant(self.catalog, self.storage, claim)

    def _outcome(
        self,
        claim: Claim,
        job: _Job,
        beat: _Beat,
        progress: Callable[..., None],
        cancelled: Callable[[], bool],
    ) -> JobStatus | None:
        """Run the job, publish its artifacts and record how it ended: the status it is left
        in, or None when a newer attempt owns it (every write is fenced). A publish that fails
        (the object store is away) is a failure like any other, retried."""
        try:
            result, folder = job.run(progress, cancelled)
            output_dir, files = self.storage.publish(claim.job_id, folder) if folder else (None, [])
        except Cancelled:
            if beat.lost.is_set():
                return None
            if beat.cancel.is_set():
                return JobStatus.canceled if self.queue.canceled(claim) else None
            return JobStatus.queued if self.queue.release(claim) else None
        except Exception as e:
            return self._failed(claim, e)
        except BaseException as e:  # a tokenizer the Rust library panics on, mid-job
            if not is_panic(e):
                raise
            return self._failed(claim, InputError(f"the tokenizer library failed: {e}"))
        if self.queue.succeed(claim, result, output_dir, files):
            return JobStatus.succeeded
        return None

    def _failed(self, claim: Claim, e: Exception) -> JobStatus | None:
        """Record a failure as `classify` sees it; the detail is redacted of server paths."""
        error_type, detail, retry = classify(e)
        if error_type == "store_unavailable":
            return self._deferred(claim, e)
        if retry or error_type == "no_space":
            log.exception("job %s attempt %d failed", claim.job_id, claim.attempt)
        return self.queue.fail(claim, error_type, redact(detail), retry=retry)

    def _deferred(self, claim: Claim, e: Exception) -> JobStatus | None:
        """Put the job back for `backoff`'s wait, its attempt not counted; fail it once the
        waits add up to `store_retry_total_seconds`."""
        wait = backoff(self.settings, claim.deferrals)
        if wait is None:
            log.error("job %s failed: the object store stayed away (%s)", claim.job_id, e)
            return self.queue.fail(claim, "store_unavailable", STORE_DOWN, retry=False)
        log.warning("job %s put off for %.0f s: %s", claim.job_id, wait, e)
        return self.queue.defer(claim, "store_unavailable", STORE_DOWN, timedelta(seconds=wait))

    def retain(self) -> None:
        """Delete finished jobs older than `retention_days`, then the oldest succeeded jobs
        while their artifacts exceed `max_artifact_bytes`: rows and files, as DELETE does; then
        sweep the storage of outputs no job records or runs."""
        s, doomed = self.settings, []
        if s.retention_days is not None:
            cutoff = utcnow() - timedelta(days=s.retention_days)
            doomed += self.queue.finished_before(cutoff, RETAIN_BATCH)
        if s.max_artifact_bytes is not None:
            doomed += self.queue.over_quota(s.max_artifact_bytes, RETAIN_BATCH)
        for job_id in dict.fromkeys(doomed):
            if self.queue.delete(job_id):
                self.storage.remove(job_id)
                log.info("deleted job %s: retention", job_id)
        grace, known = SWEEP_GRACE * s.stale_seconds, self.queue.known_uploads
        swept = self.storage.sweep(self.queue.live_outputs, grace)
        swept += self.storage.sweep_uploads(known, grace) + self.catalog.sweep_uploads(known, grace)
        if swept:
            log.info("swept %d leftovers (dead attempts, orphaned uploads) from the storage", swept)
