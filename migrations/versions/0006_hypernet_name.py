"""hypernet jobs claim their store name: one queued or running job per name

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hypernet_name", sa.String(length=128), nullable=True))
    _fill_names()
    op.create_index(
        "ix_jobs_hypernet_name",
        "jobs",
        ["hypernet_name"],
        unique=True,
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def _fill_names() -> None:
    """Every hypernet job's name from its request; where unfinished jobs already share one
    (the race this revision closes), the oldest holds it and the others go without."""
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("status", sa.String),
        sa.column("request", sa.JSON),
        sa.column("created_at", sa.String),
        sa.column("hypernet_name", sa.String),
    )
    conn = op.get_bind()
    query = sa.select(jobs.c.id, jobs.c.status, jobs.c.request).where(jobs.c.kind == "hypernet")
    held = set()
    for row in conn.execute(query.order_by(jobs.c.created_at, jobs.c.id)).all():
        name = (row.request or {}).get("name")
        if row.status in ("queued", "running"):
            if name in held:
                continue
            held.add(name)
        change = jobs.update().where(jobs.c.id == row.id).values(hypernet_name=name)
        conn.execute(change)


def downgrade() -> None:
    op.drop_index("ix_jobs_hypernet_name", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("hypernet_name")
