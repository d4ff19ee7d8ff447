"""Database rows as API bodies."""

from __future__ import annotations

from ..models import Job, Upload
from ..schemas import JobError, JobOut, JobUrls, Progress, UploadOut


def job_out(job: Job) -> JobOut:
    base = f"/jobs/{job.id}"
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=Progress(stage=job.stage, fraction=job.fraction, message=job.message),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        error=JobError(type=job.error_type, detail=job.error_detail) if job.error_type else None,
        request=job.request,
        result=job.result,
        urls=JobUrls(
            self=base,
            events=f"{base}/events",
            artifacts=f"{base}/artifacts",
            checkpoint=f"{base}/checkpoint.tar",
        ),  # fmt: skip
    )


def etag(job: Job) -> str:
    """Weak: it names a version of the job's row, not a byte-exact body."""
    return f'W/"{job.id}-{job.version}"'


def upload_out(row: Upload) -> UploadOut:
    return UploadOut(
        id=row.id, kind=row.kind, filename=row.filename, size=row.size, sha256=row.sha256,
        vocab_size=row.vocab_size, created_at=row.created_at,
    )  # fmt: skip
