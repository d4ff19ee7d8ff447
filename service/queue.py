"""Every query on the jobs table: enqueue, claim, heartbeat, progress, finish, cancel, reap.

Writes from a worker are fenced by (worker id, attempt): a worker that was presumed dead and
whose job was requeued and claimed again cannot overwrite the newer attempt. Each state change
is recorded as a `JobEvent`, which the SSE stream replays.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, Select, and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from .models import Artifact, Chore, Job, JobEvent, JobKind, JobStatus, Upload, Worker, utcnow
from .storage import ATTEMPT, Output, attempt_dir


@dataclass(frozen=True)
class Claim:
    """A running job as its worker holds it: the fence for every later write."""

    job_id: str
    worker_id: str
    attempt: int
    request: dict
    kind: str = JobKind.transplant
    deferrals: int = 0  # earlier attempts put off for a store that did not answer


CHANNEL = "tokengraft_jobs"  # NOTIFY'd when a job is queued; idle workers LISTEN (wakeup.py)
TERMINAL = [JobStatus.succeeded, JobStatus.failed, JobStatus.canceled]
SWEEP_BATCH = 500  # job or upload ids per query of the sweep: bounded IN lists
GIVEN_BACK = "given back"  # the stage of a job its worker gave back (`release`), until claimed
RETRYING = "queued to retry"  # the stage of a job requeued after a failed or lost attempt
WAITING = "waiting for the store"  # the stage of a job put off while its store did not answer


class Conflict(Exception):
    """An Idempotency-Key reused with a different request body."""


class NameTaken(Exception):
    """A hypernet job's store name, claimed by an unfinished job (its id is the argument)."""


def _event(session: Session, job: Job, kind: str, data: dict) -> None:
    session.add(JobEvent(job_id=job.id, kind=kind, data=data))


def _state(session: Session, job_id: str, status: JobStatus, **data: object) -> None:
    session.add(JobEvent(job_id=job_id, **state(status, **data)))
    if status == JobStatus.queued:
        _wake(session, job_id)


def requeued(stage: str, message: str) -> dict:
    """The progress a job requeued shows until it is claimed, instead of its last attempt's."""
    return {"stage": stage, "fraction": 0.0, "message": message}


def _wake(session: Session, job_id: str) -> None:
    """Tell idle workers a job is queued (`service.wakeup`): PostgreSQL delivers the
    notification when this transaction commits, and never if it rolls back."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, job_id)))


def _training(name: str) -> Select:
    """The id of the unfinished job that holds a hypernetwork's name (one at most)."""
    unfinished = Job.status.in_([JobStatus.queued, JobStatus.running])
    return select(Job.id).where(Job.hypernet_name == name, unfinished)


def oldest_queued() -> Select:
    """The next job to claim, none put off until later; ix_jobs_queued holds these rows (and
    the put off ones, few) in this order."""
    due = or_(Job.run_after.is_(None), Job.run_after <= utcnow())
    oldest = select(Job.id).where(Job.status == JobStatus.queued, due)
    return oldest.order_by(Job.created_at, Job.id).limit(1)


def state(status: JobStatus, **data: object) -> dict:
    """A state change as its event records it."""
    return {"kind": "state", "data": {"status": status.value, **data}}


def describe(detail: dict) -> str:
    """A tick's detail as a short line for people: {"step": 12, "loss": 0.4312} ->
    "step 12, loss 0.4312"; a nested dict (held-out scores) goes in parentheses."""
    return ", ".join(f"{k} {_value(v)}" for k, v in detail.items())


def _value(v: object) -> str:
    if isinstance(v, dict):
        return f"({describe(v)})"
    return str(round(v, 4) if isinstance(v, float) else v)


def _keeps(row: Row, output_dir: str) -> bool:
    """Whether the storage keeps this folder of the job's row: the recorded output of a
    succeeded job, the current attempt of a running one, and the scratch folders of a queued
    or running job (what its next attempt resumes from; once it is over, no worker does)."""
    if not ATTEMPT.fullmatch(output_dir):
        return row.status in (JobStatus.queued, JobStatus.running)
    if row.status == JobStatus.succeeded:
        return output_dir == row.output_dir
    return row.status == JobStatus.running and output_dir == attempt_dir(row.attempt)


class Queue:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        max_attempts: int = 3,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        """`reads` serve the queries that only read (on SQLite they take no write lock)."""
        self.sessions, self.reads = sessions, reads or sessions
        self.max_attempts = max_attempts

    # --- API side ---------------------------------------------------------------------------
    def enqueue(
        self,
        request: dict,
        request_hash: str,
        idempotency_key: str | None = None,
        expires_in: timedelta | None = None,
        kind: JobKind = JobKind.transplant,
    ) -> tuple[Job, bool]:
        """The new job, or the one an unexpired Idempotency-Key already names (created=False).
        Raises Conflict when that key was used with another body, NameTaken when an unfinished
        hypernet job trains the name this one would (ix_jobs_hypernet_name makes it atomic)."""
        now = utcnow()
        expires = now + expires_in if idempotency_key and expires_in else None
        name = request.get("name") if kind == JobKind.hypernet else None
        for _ in range(3):
            try:
                with self.sessions.begin() as s:
                    if idempotency_key is not None:
                        old = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
                        if old is not None and old.idempotency_expires_at > now:
                            if old.request_hash != request_hash:
                                raise Conflict(idempotency_key)
                            return old, False
                        if old is not None:  # expired: the key is free again
                            old.idempotency_key = None
                            s.flush()
                    if name is not None and (holder := s.scalar(_training(name))) is not None:
                        raise NameTaken(holder)
                    job = Job(
                        id=uuid.uuid4().hex,
                        kind=kind,
                        status=JobStatus.queued,
                        request=request,
                        request_hash=request_hash,
                        idempotency_key=idempotency_key,
                        idempotency_expires_at=expires,
                        created_at=now,
                        hypernet_name=name,
                    )
                    s.add(job)
                    s.flush()
                    _state(s, job.id, JobStatus.queued)
                    return job, True
            except IntegrityError:
                continue  # a concurrent request inserted the same key or name first: look again
        raise RuntimeError("could not enqueue: Idempotency-Key contention")

    def remembers(self, idempotency_key: str) -> bool:
        """Whether an unexpired job holds this Idempotency-Key (a replay gets that job)."""
        query = select(Job.idempotency_expires_at).where(Job.idempotency_key == idempotency_key)
        with self.reads() as s:
            expires = s.scalar(query)
        return expires is not None and expires > utcnow()

    def training(self, name: str) -> str | None:
        """The unfinished hypernet job that holds the store name `name`, if any."""
        with self.reads() as s:
            return s.scalar(_training(name))

    def unfinished(self, kind: JobKind) -> list[Job]:
        """Queued and running jobs of one kind (few at any time)."""
        query = select(Job).where(
            Job.kind == kind, Job.status.in_([JobStatus.queued, JobStatus.running])
        )
        with self.reads() as s:
            return list(s.scalars(query))

    def get(self, job_id: str) -> Job | None:
        with self.reads() as s:
            return s.get(Job, job_id)

    def page(
        self,
        status: JobStatus | None,
        after: tuple[datetime, str] | None,
        limit: int,
        kind: JobKind | None = None,
    ) -> list[Job]:
        """Newest first; `after` is the (created_at, id) of the last job of the previous page."""
        query: Select = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Job.status == status)
        if kind is not None:
            query = query.where(Job.kind == kind)
        if after is not None:
            created, jid = after
            query = query.where(
                (Job.created_at < created) | and_(Job.created_at == created, Job.id < jid)
            )
        with self.reads() as s:
            return list(s.scalars(query))

    def cancel(self, job_id: str) -> Job | None:
        """Queued: canceled at once. Running: flagged; the worker stops at the next stage
        boundary. Terminal: unchanged. Idempotent."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None:
                return None
            if job.status == JobStatus.queued:
                job.status, job.finished_at = JobStatus.canceled, utcnow()
                job.version += 1
                _state(s, job.id, JobStatus.canceled)
            elif job.status == JobStatus.running and not job.cancel_requested:
                job.cancel_requested = True
                job.version += 1
                _event(s, job, "progress", {"message": "cancel requested"})
            return job

    def delete(self, job_id: str) -> bool:
        """Remove a terminal job and its rows; False if it is queued or running."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or not JobStatus(job.status).terminal:
                return False
            s.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            s.execute(delete(Artifact).where(Artifact.job_id == job_id))
            s.delete(job)
            return True

    def events(self, job_id: str, after: int) -> list[JobEvent]:
        with self.reads() as s:
            query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
            return list(s.scalars(query.order_by(JobEvent.id)))

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.reads() as s:
            query = select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.path)
            return list(s.scalars(query))

    def counts(self) -> dict[str, int]:
        with self.reads() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status))
            return {status: n for status, n in rows}

    def durations(self) -> dict[str, tuple[int, float]]:
        """status -> (count, total seconds from start to finish) of finished jobs, for /metrics;
        summed in the database so that the cost does not grow with the history."""
        with self.reads() as s:
            if s.get_bind().dialect.name == "postgresql":
                seconds = func.extract("epoch", Job.finished_at - Job.started_at)
            else:
                seconds = (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400
            rows = s.execute(
                select(Job.status, func.count(), func.coalesce(func.sum(seconds), 0.0))
                .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
                .group_by(Job.status)
            )
            return {status: (n, float(total)) for status, n, total in rows}

    def live_workers(self, stale_seconds: float) -> int:
        cutoff = utcnow() - timedelta(seconds=stale_seconds)
        with self.reads() as s:
            query = select(func.count()).select_from(Worker)
            return s.scalar(query.where(Worker.heartbeat_at > cutoff, Worker.stopped_at.is_(None)))

    # --- retention ----------------------------------------------------------------------------
    def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Terminal jobs that finished before `cutoff`, oldest first."""
        finished = func.coalesce(Job.finished_at, Job.created_at)
        query = select(Job.id).where(Job.status.in_(TERMINAL), finished < cutoff)
        with self.reads() as s:
            return list(s.scalars(query.order_by(finished, Job.id).limit(limit)))

    def over_quota(self, max_bytes: int, limit: int) -> list[str]:
        """The oldest succeeded jobs whose artifacts must go for the rest to fit in
        `max_bytes` (jobs without artifacts free nothing and are never named)."""
        size = func.sum(Artifact.size)
        query = (
            select(Job.id, size)
            .join(Artifact, Artifact.job_id == Job.id)
            .where(Job.status == JobStatus.succeeded)
            .group_by(Job.id, Job.finished_at)
            .order_by(Job.finished_at, Job.id)
        )
        with self.reads() as s:
            sizes = [(job_id, int(n)) for job_id, n in s.execute(query)]
        excess, doomed = sum(n for _, n in sizes) - max_bytes, []
        for job_id, n in sizes[:limit]:
            if excess <= 0:
                break
            doomed.append(job_id)
            excess -= n
        return doomed

    # --- worker side ------------------------------------------------------------------------
    def register(self, worker_id: str, hostname: str, pid: int, device: str) -> None:
        with self.sessions.begin() as s:
            s.add(Worker(id=worker_id, hostname=hostname, pid=pid, device=device))

    def take_turn(self, chore: str, every: timedelta) -> bool:
        """Whether this caller runs `chore` now: one caller in `every` across every worker
        of the database, by a compare-and-set on the chore's row (made by its first taker)."""
        now = utcnow()
        due = update(Chore).where(Chore.name == chore, Chore.done_at <= now - every)
        with self.sessions.begin() as s:
            if s.execute(due.values(done_at=now)).rowcount == 1:
                return True
            if s.get(Chore, chore) is not None:
                return False
        try:
            with self.sessions.begin() as s:
                s.add(Chore(name=chore, done_at=now))
        except IntegrityError:  # another worker made it first, and took this turn
            return False
        return True

    def worker_beat(self, worker_id: str, stopped: bool = False) -> None:
        now = utcnow()
        values = {"heartbeat_at": now, **({"stopped_at": now} if stopped else {})}
        with self.sessions.begin() as s:
            s.execute(update(Worker).where(Worker.id == worker_id).values(**values))

    def claim(self, worker_id: str) -> Claim | None:
        """Take the oldest queued job: FOR UPDATE SKIP LOCKED on PostgreSQL, a single
        compare-and-set UPDATE on SQLite (whose writers are serialized anyway). The attempt
        counts up, except for a job given back, which goes on with the attempt it showed."""
        now = utcnow()
        oldest = oldest_queued()
        with self.sessions.begin() as s:
            if s.get_bind().dialect.name == "postgresql":
                target = s.scalar(oldest.with_for_update(skip_locked=True))
                if target is None:
                    return None
            else:
                target = oldest.scalar_subquery()
            row = s.execute(
                update(Job)
                .where(Job.id == target, Job.status == JobStatus.queued)
                .values(
                    status=JobStatus.running,
                    worker_id=worker_id,
                    attempt=case((Job.stage == GIVEN_BACK, Job.attempt), else_=Job.attempt + 1),
                    heartbeat_at=now,
                    started_at=func.coalesce(Job.started_at, now),
                    stage=None,
                    fraction=0.0,
                    message=None,
                    version=Job.version + 1,
                )
                .returning(Job.id, Job.attempt, Job.request, Job.kind, Job.deferrals)
            ).first()
            if row is None:
                return None
            _state(s, row.id, JobStatus.running, attempt=row.attempt, worker=worker_id)
            return Claim(row.id, worker_id, row.attempt, row.request, row.kind, row.deferrals)

    def _fenced(self, claim: Claim):  # noqa: ANN202 (a SQLAlchemy Update)
        return update(Job).where(
            Job.id == claim.job_id,
            Job.worker_id == claim.worker_id,
            Job.attempt == claim.attempt,
            Job.status == JobStatus.running,
        )

    def _transition(
        self, claim: Claim, event: dict, rows: Iterable[object] = (), **values: object
    ) -> bool:
        """One fenced change of a running job: the row (its version bumped), the `event` that
        records it and any other `rows`, in one transaction. False if a newer attempt owns it."""
        with self.sessions.begin() as s:
            change = self._fenced(claim).values(**values, version=Job.version + 1)
            if not s.execute(change).rowcount:
                return False
            s.add_all(rows)
            s.add(JobEvent(job_id=claim.job_id, **event))
            if values.get("status") == JobStatus.queued:
                _wake(s, claim.job_id)
            return True

    def cancel_requested(self, claim: Claim) -> tuple[bool, bool]:
        """(still ours, cancel requested), read without writing: cheap enough to ask twice
        a second between heartbeats."""
        query = select(Job.worker_id, Job.attempt, Job.status, Job.cancel_requested)
        with self.reads() as s:
            row = s.execute(query.where(Job.id == claim.job_id)).first()
        ours = row is not None and (row.worker_id, row.attempt, row.status) == (
            claim.worker_id,
            claim.attempt,
            JobStatus.running,
        )
        return ours, bool(ours and row.cancel_requested)

    def heartbeat(self, claim: Claim) -> tuple[bool, bool]:
        """(still ours, cancel requested)."""
        with self.sessions.begin() as s:
            row = s.execute(
                self._fenced(claim).values(heartbeat_at=utcnow()).returning(Job.cancel_requested)
            ).first()
            return (row is not None, bool(row and row.cancel_requested))

    def progress(
        self,
        claim: Claim,
        stage: str,
        fraction: float,
        message: str | None,
        detail: dict | None = None,
    ) -> bool:
        """Record a tick; `detail` (refine: step and loss) joins the event's data as it is
        and, unless a message is given, becomes the row's message ("step 12, loss 0.4312")."""
        if message is None and detail:
            message = describe(detail)
        data = {"stage": stage, "fraction": round(fraction, 4), "message": message}
        data.update({k: v for k, v in (detail or {}).items() if k not in data})
        return self._transition(
            claim,
            {"kind": "progress", "data": data},
            stage=stage,
            fraction=fraction,
            message=message,
            heartbeat_at=utcnow(),
        )

    def succeed(
        self, claim: Claim, result: dict, output_dir: str | None, files: list[tuple[str, int, str]]
    ) -> bool:
        """Mark succeeded and record its files in one transaction; False if fenced off. A job
        without artifacts (a trained hypernetwork goes to the store) has no output folder."""
        artifacts = [Artifact(job_id=claim.job_id, path=p, size=n, sha256=h) for p, n, h in files]
        return self._transition(
            claim,
            state(JobStatus.succeeded),
            artifacts,
            status=JobStatus.succeeded,
            result=result,
            output_dir=output_dir,
            finished_at=utcnow(),
            stage=None,
            fraction=1.0,
            message=None,
        )

    def fail(self, claim: Claim, error_type: str, detail: str, retry: bool) -> JobStatus | None:
        """Requeue a retryable failure while attempts remain (those put off are not counted),
        else fail; None if fenced off."""
        remain = claim.attempt - claim.deferrals < self.max_attempts
        status = JobStatus.queued if retry and remain else JobStatus.failed
        detail = detail[:2000]
        again = f"attempt {claim.attempt} failed ({error_type}); queued to run again"
        done = self._transition(
            claim,
            state(status, error={"type": error_type, "detail": detail}),
            status=status,
            error_type=error_type,
            error_detail=detail,
            worker_id=None,
            finished_at=utcnow() if status == JobStatus.failed else None,
            **(requeued(RETRYING, again) if status == JobStatus.queued else {}),
        )
        return status if done else None

    def defer(
        self, claim: Claim, error_type: str, detail: str, wait: timedelta
    ) -> JobStatus | None:
        """Queue the job again, not to be claimed for `wait` (its store did not answer), its
        attempt not counted against max_attempts; None if fenced off."""
        detail = detail[:2000]
        error = {"type": error_type, "detail": detail}
        later = f"the store did not answer; tried again in {wait.total_seconds():.0f} s"
        done = self._transition(
            claim,
            state(JobStatus.queued, error=error, retry_in=wait.total_seconds()),
            status=JobStatus.queued,
            error_type=error_type,
            error_detail=detail,
            worker_id=None,
            deferrals=Job.deferrals + 1,
            run_after=utcnow() + wait,
            **requeued(WAITING, later),
        )
        return JobStatus.queued if done else None

    def canceled(self, claim: Claim) -> bool:
        return self._transition(
            claim, state(JobStatus.canceled), status=JobStatus.canceled, finished_at=utcnow()
        )

    def reap(self, stale_seconds: float) -> list[str]:
        """Requeue running jobs whose worker stopped beating (failed after max attempts)."""
        cutoff = utcnow() - timedelta(seconds=stale_seconds)
        reaped = []
        with self.sessions.begin() as s:
            stale = select(Job).where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
            if s.get_bind().dialect.name == "postgresql":
                stale = stale.with_for_update(skip_locked=True)
            for job in s.scalars(stale):
                lost = f"worker {job.worker_id} stopped beating during attempt {job.attempt}"
                if job.attempt - job.deferrals >= self.max_attempts:
                    job.status, job.finished_at = JobStatus.failed, utcnow()
                    job.error_type, job.error_detail = "worker_lost", lost
                elif job.cancel_requested:
                    job.status, job.finished_at = JobStatus.canceled, utcnow()
                else:
                    job.status = JobStatus.queued
                    for field, value in requeued(RETRYING, lost + "; queued to run again").items():
                        setattr(job, field, value)
                job.worker_id = None
                job.version += 1
                _state(s, job.id, JobStatus(job.status), reason=lost)
                reaped.append(job.id)
        return reaped

    def release(self, claim: Claim) -> bool:
        """Give a job back untouched (its worker is shutting down): queued again, showing the
        attempt it made and the stage GIVEN_BACK; its next claim goes on with that attempt
        rather than using up another."""
        return self._transition(
            claim,
            state(JobStatus.queued, reason="worker shut down"),
            status=JobStatus.queued,
            worker_id=None,
            **requeued(GIVEN_BACK, "its worker shut down; queued to run again"),
        )

    # --- storage sweep ------------------------------------------------------------------------
    def live_outputs(self, outputs: list[Output]) -> set[Output]:
        """Those (job id, output folder) pairs the storage must keep (`_keeps`)."""
        job_ids = list(dict.fromkeys(job_id for job_id, _ in outputs))
        query = select(Job.id, Job.status, Job.output_dir, Job.attempt)
        rows = {row.id: row for row in self._rows_in(query, Job.id, job_ids)}
        return {
            (job_id, output_dir)
            for job_id, output_dir in outputs
            if job_id in rows and _keeps(rows[job_id], output_dir)
        }

    def known_uploads(self, upload_ids: list[str]) -> set[str]:
        """Those of `upload_ids` that have a row: the sweep keeps their files."""
        return {row.id for row in self._rows_in(select(Upload.id), Upload.id, upload_ids)}

    def _rows_in(self, query: Select, column: InstrumentedAttribute, ids: list[str]) -> list[Row]:
        """`query`'s rows whose `column` is one of `ids`, asked `SWEEP_BATCH` ids at a time
        (bounded IN lists)."""
        with self.reads() as s:
            return [
                row
                for start in range(0, len(ids), SWEEP_BATCH)
                for row in s.execute(query.where(column.in_(ids[start : start + SWEEP_BATCH])))
            ]
