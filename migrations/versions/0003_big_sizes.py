"""file sizes as 64-bit integers: a checkpoint file may exceed 2 GiB

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("artifacts", "uploads")


def _size(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("size", existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    _size(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails on PostgreSQL while a size over 2 GiB is recorded: such a row has no place there.
    _size(sa.BigInteger(), sa.Integer())
