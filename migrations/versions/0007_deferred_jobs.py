"""jobs put off while their store does not answer: how often, and until when

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import service.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deferrals", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("run_after", service.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run_after")
        batch_op.drop_column("deferrals")
