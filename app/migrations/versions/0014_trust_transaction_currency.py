"""trust_transactions: the currency a transaction moved money in; ride_matches by request

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

A purchase-protection payout on an upheld complaint is paid in the protected pool's currency.
Trust knows nothing of pools, so a pool's settlement (and a ride's completion) tells it the
currency when it registers the transaction; the transactions registered before this revision
take theirs from their pool or match here.

A rider's page of requests shows each one's current match: one statement for the page reads
the matches of its requests by request_id, which no index led with.
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
    for subject_type, table in (("pool", "pools"), ("match", "ride_matches")):
        op.execute(
            f"UPDATE trust_transactions SET currency = (SELECT s.currency FROM {table} s "  # noqa: S608
            f"WHERE s.id = trust_transactions.subject_id) WHERE subject_type = '{subject_type}'"
        )
    op.create_index("ix_ride_matches_request", "ride_matches", ["request_id", "row_id"])


def downgrade() -> None:
    op.drop_index("ix_ride_matches_request", table_name="ride_matches")
    with op.batch_alter_table("trust_transactions", recreate="never") as batch:
        batch.drop_column("currency")
