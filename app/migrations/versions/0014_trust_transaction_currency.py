"""trust_transactions: the currency a transaction moved money in

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

A purchase-protection payout on an upheld complaint is paid in the protected pool's currency.
Trust knows nothing of pools, so the pool's settlement tells it the currency when it registers
the transaction; rows registered before this revision have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trust_transactions") as batch:
        batch.add_column(sa.Column("currency", sa.String(3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trust_transactions") as batch:
        batch.drop_column("currency")
