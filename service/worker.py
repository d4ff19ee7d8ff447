"""The worker: claim a job, run the transplant with progress and cancellation, record the
outcome. Many workers (threads, processes, machines) can share one database.

Errors are classified: bad input and out-of-memory fail at once, anything else is treated as
transient and retried up to `max_attempts`. A lost worker's job is requeued by any other
worker's reaper once its heartbeat is `stale_seconds` old.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import torch

from hypernet.errors import Cancelled, InputError
from hypernet.transplant import TransplantRequest, transplant

from . import refine
from .catalog import Catalog
from .config import Settings
from .models import JobStatus
from .queue import Claim, Queue
from .storage import Storage

log = logging.getLogger("tokengraft.worker")


def build_request(catalog: Catalog, request: dict, out: Path) -> TransplantRequest:
    """The library's request from the API's, every name resolved by the catalog; the report
    names the inputs as the user did, never by the server's paths."""
    spec = request.get("refine")
    names: dict = {
        k: request[k] for k in ("model", "tokenizer", "eval_text", "hypernet") if request.get(k)
    }
    if spec:
        names["refine_texts"] = list(spec["texts"])
    return TransplantRequest(
        model=str(catalog.model(request["model"])),
        tokenizer=str(catalog.tokenizer(request["tokenizer"])),
        out=out,
        method=request.get("method", "hybrid"),
        options=request.get("options") or {},
        eval_text=catalog.text(request["eval_text"]) if request.get("eval_text") else None,
        eval_bytes=request.get("eval_bytes"),
        hypernet=str(catalog.hypernet(request["hypernet"])) if request.get("hypernet") else None,
        refine=refine.config(spec) if spec else None,
        refine_texts=refine.paths(catalog, spec) if spec else [],
        names=names,
    )


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
    """Heartbeats for one running job; notices cancel requests and a lost claim."""

    def __init__(self, queue: Queue, claim: Claim, every: float) -> None:
        super().__init__(daemon=True, name=f"beat-{claim.job_id[:8]}")
        self.queue, self.claim, self.every = queue, claim, every
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                ours, cancel = self.queue.heartbeat(self.claim)
                self.queue.worker_beat(self.claim.worker_id)
            except Exception:  # a database blip: try again at the next beat
                log.warning("heartbeat failed for job %s", self.claim.job_id, exc_info=True)
                continue
            if not ours:
                self.lost.set()
            if cancel:
                self.cancel.set()


class Worker:
    def __init__(
        self, settings: Settings, queue: Queue, storage: Storage, catalog: Catalog
    ) -> None:
        self.settings, self.queue, self.storage, self.catalog = settings, queue, storage, catalog
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.stop = threading.Event()  # stop claiming; finish the current job
        self.abandon = threading.Event()  # give the current job back at the next stage boundary

    def run(self) -> None:
        self.queue.register(self.id, socket.gethostname(), os.getpid(), self.device)
        log.info("worker %s started on %s", self.id, self.device)
        try:
            beaten = 0.0
            while not self.stop.is_set():
                if time.monotonic() - beaten >= self.settings.heartbeat_seconds:
                    self.queue.worker_beat(self.id)
                    for job_id in self.queue.reap(self.settings.stale_seconds):
                        log.warning("requeued job %s: its worker stopped beating", job_id)
                    beaten = time.monotonic()
                try:
                    claim = self.queue.claim(self.id)
                    if claim is not None:
                        self.run_job(claim)
                        continue
                except Exception:  # the database went away: its job is reaped if need be
                    log.exception("worker %s: database error; retrying", self.id)
                self.stop.wait(self.settings.poll_seconds)
        finally:
            self.queue.worker_beat(self.id, stopped=True)
            log.info("worker %s stopped", self.id)

    def run_job(self, claim: Claim) -> JobStatus | None:
        log.info("job %s attempt %d", claim.job_id, claim.attempt)
        beat = _Beat(self.queue, claim, self.settings.heartbeat_seconds)
        beat.start()
        ticks = _Ticks()

        def progress(stage: str, fraction: float, detail: dict | None = None) -> None:
            if ticks.keep(stage, fraction, detail) and not self.queue.progress(
                claim, stage, fraction, None, detail
            ):
                beat.lost.set()

        def cancelled() -> bool:
            return beat.cancel.is_set() or beat.lost.is_set() or self.abandon.is_set()

        out = self.storage.workspace(claim.job_id, claim.attempt)
        try:
            report = transplant(
                build_request(self.catalog, claim.request, out), progress, cancelled
            )
        except Cancelled:
            self.storage.remove(claim.job_id, out.name)
            if beat.lost.is_set():
                return None
            if beat.cancel.is_set():
                return JobStatus.canceled if self.queue.canceled(claim) else None
            return JobStatus.queued if self.queue.release(claim) else None
        except InputError as e:
            return self._fail(claim, out, "invalid_input", str(e), retry=False)
        except (MemoryError, torch.OutOfMemoryError) as e:
            return self._fail(claim, out, "out_of_memory", str(e) or "out of memory", retry=False)
        except Exception as e:
            log.exception("job %s attempt %d failed", claim.job_id, claim.attempt)
            return self._fail(claim, out, "internal", f"{type(e).__name__}: {e}", retry=True)
        finally:
            beat.done.set()
        files = self.storage.manifest(claim.job_id, out.name)
        if self.queue.succeed(claim, {"report": report.to_dict()}, out.name, files):
            return JobStatus.succeeded
        self.storage.remove(claim.job_id, out.name)  # a newer attempt owns the job now
        return None

    def _fail(
        self, claim: Claim, out: Path, error_type: str, detail: str, retry: bool
    ) -> JobStatus | None:
        self.storage.remove(claim.job_id, out.name)
        return self.queue.fail(claim, error_type, detail, retry)


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    return thread
