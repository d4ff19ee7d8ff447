"""an index of queued jobs only, in claim order: a long history no longer slows the claim

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queued",
        "jobs",
        ["created_at", "id"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued", table_name="jobs")
