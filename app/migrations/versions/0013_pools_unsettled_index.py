"""pools: a partial index of the pools not settled yet, for the settlement sweep

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

The sweep asks every minute for pools past their deadline still open, or decided but not
settled. Without this index its query read every pool ever made (the second case has no
indexed column); the pools not settled yet are few.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_pools_unsettled",
        "pools",
        ["deadline"],
        postgresql_where=sa.text("settled_at IS NULL"),
        sqlite_where=sa.text("settled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_pools_unsettled", table_name="pools")
