"""pool_joins.first_version: a raise holds only what it adds

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

A join raised by a member (joining again) used to void its hold and hold the new total: three
ledger rows a raise (the old hold's status, its void entry, the new hold), and a fourth write
when the void entry is chained. Now a raise holds only the amount it adds, as one more hold of
the join: a join's holds are its versions `first_version` .. `version` (hold ids
`pool:<pool>:join:<join>:v<version>`), one ledger row a raise. Leaving voids them all;
settlement captures them oldest first, up to the charge, and voids what is left. A join written
before this revision has one hold, its current version's.

A join keeps at most `groupbuy.service.MAX_JOIN_HOLDS` holds: the raise that would pass it
releases them and holds the new total (first_version = its version), so leaving or settling one
join is bounded work. `pool_join_batch` (made by migration 0012) now takes each raised join's
`first_version` (r_first, after r_version) and writes it; 1 for a first join.

`ledger_replace_set` finds the holds it voids by joining their ids (`unnest`) to the transfers'
id index. Its `id = ANY (ids) AND status = 'pending'` was planned (generic plan, statistics of a
young table) as a bitmap AND of the id index with the partial index of pending holds, which
reads every pending hold: cheap while each join had one hold, 7 ms a call once a flash crowd's
raises had left tens of thousands pending.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

JOIN_BATCH = """
CREATE OR REPLACE FUNCTION pool_join_batch(
    p_pool uuid, p_now timestamptz, p_quantity integer, p_new_members integer,
    p_accounts integer[],
    -- joins raised or rejoined: id, quantity, held, newest hold id, version and first version
    -- (as they become), status as read, last request
    r_id uuid[], r_quantity integer[], r_held bigint[], r_hold text[],
    r_version integer[], r_first integer[], r_was text[], r_request text[],
    -- first joins (version 1)
    n_id uuid[], n_user uuid[], n_quantity integer[], n_held bigint[], n_hold text[],
    n_request text[],
    -- the holds (ledger_replace_set's arguments)
    h_ids text[], h_debits integer[], h_credits integer[], h_debit_keys text[],
    h_credit_keys text[], h_amounts bigint[], h_currencies text[], h_kinds text[],
    h_refs text[], h_expires_at timestamptz[], h_now timestamptz, h_void_ids text[]
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_pool pools;
    v_rows bigint;
    v_set record;
BEGIN
    SELECT * INTO v_pool FROM pools WHERE id = p_pool FOR UPDATE;
    IF NOT FOUND OR v_pool.status <> 'open' OR v_pool.deadline <= p_now
       OR v_pool.committed_quantity + p_quantity >= v_pool.max_quantity THEN
        RAISE EXCEPTION 'pool % changed: closed, or no room for % more without filling it',
            p_pool, p_quantity USING ERRCODE = 'CP412';
    END IF;
    PERFORM 1 FROM ledger_accounts WHERE id = ANY (p_accounts) ORDER BY id FOR NO KEY UPDATE;
    UPDATE pool_joins j
       SET quantity = u.quantity, held_minor = u.held, hold_id = u.hold, version = u.version,
           first_version = u.first,
           status = 'active', last_request = u.request, updated_at = p_now
      FROM unnest(r_id, r_quantity, r_held, r_hold, r_version, r_first, r_was, r_request)
           AS u(id, quantity, held, hold, version, first, was, request)
     WHERE j.id = u.id AND j.pool_id = p_pool AND j.version = u.version - 1
       AND j.status = u.was;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows <> coalesce(cardinality(r_id), 0) THEN
        RAISE EXCEPTION 'a join of pool % changed', p_pool USING ERRCODE = 'CP412';
    END IF;
    INSERT INTO pool_joins (id, pool_id, user_id, quantity, held_minor, hold_id, version,
                            first_version, status, last_request, charged_minor, created_at,
                            updated_at)
    SELECT id, p_pool, member, quantity, held, hold, 1, 1, 'active', request, 0, p_now, p_now
      FROM unnest(n_id, n_user, n_quantity, n_held, n_hold, n_request)
           AS n(id, member, quantity, held, hold, request)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows <> coalesce(cardinality(n_id), 0) THEN
        RAISE EXCEPTION 'a member joined pool % meanwhile', p_pool USING ERRCODE = 'CP412';
    END IF;
    SELECT * INTO v_set FROM ledger_replace_set(h_ids, h_debits, h_credits, h_debit_keys,
        h_credit_keys, h_amounts, h_currencies, h_kinds, h_refs, h_expires_at, h_now, h_void_ids);
    IF v_set.voided < (SELECT count(DISTINCT v) FROM unnest(h_void_ids) v)
       OR v_set.staged < coalesce(cardinality(h_ids), 0) OR v_set.applied < v_set.accounts THEN
        RAISE EXCEPTION 'a hold of pool % changed, or a wallet cannot afford its hold', p_pool
            USING ERRCODE = 'CP412';
    END IF;
    UPDATE pools SET committed_quantity = committed_quantity + p_quantity,
                     participant_count = participant_count + p_new_members
     WHERE id = p_pool
    RETURNING committed_quantity INTO v_pool.committed_quantity;
    RETURN v_pool.committed_quantity;
END $$;
"""

REPLACE_SET = """
CREATE OR REPLACE FUNCTION ledger_replace_set(
    p_ids text[], p_debits integer[], p_credits integer[], p_debit_keys text[],
    p_credit_keys text[], p_amounts bigint[], p_currencies text[], p_kinds text[],
    p_refs text[], p_expires_at timestamptz[], p_now timestamptz, p_void_ids text[]
) RETURNS TABLE (voided bigint, entries bigint, staged bigint, accounts bigint, applied bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY WITH voided AS (
    UPDATE ledger_transfers t SET status = 'voided'
      FROM unnest(p_void_ids) AS v(id)
     WHERE t.id = v.id AND t.is_hold AND t.status = 'pending'
    RETURNING t.*
), void_entries AS (
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount_minor, currency,
                                  kind, ref, status, is_hold, parent_id, created_at)
    SELECT v.id || '/voided', v.debit_account_id, v.credit_account_id, v.amount_minor, v.currency,
           'void', v.ref, 'voided', false, v.id, p_now
      FROM voided v
    RETURNING 1
), spec AS (
    SELECT * FROM unnest(p_ids, p_debits, p_credits, p_debit_keys, p_credit_keys, p_amounts,
                         p_currencies, p_kinds, p_refs, p_expires_at)
        AS s(id, debit, credit, debit_key, credit_key, amount, currency, kind, ref, expires_at)
), staged AS (
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, debit_key, credit_key,
                                  amount_minor, currency, kind, ref, status, is_hold, expires_at,
                                  created_at)
    SELECT id, debit, credit, debit_key, credit_key, amount, currency, kind, ref, 'pending', true,
           expires_at, p_now
      FROM spec
    ON CONFLICT (id) DO NOTHING
    RETURNING *
), deltas AS (
    SELECT account, sum(debit) AS debit, sum(credit) AS credit FROM (
        SELECT debit_account_id AS account, amount_minor AS debit, 0::bigint AS credit FROM staged
        UNION ALL
        SELECT credit_account_id, 0::bigint, amount_minor FROM staged
        UNION ALL
        SELECT debit_account_id, -amount_minor, 0::bigint FROM voided
        UNION ALL
        SELECT credit_account_id, 0::bigint, -amount_minor FROM voided
    ) entries GROUP BY account
), applied AS (
    UPDATE ledger_accounts a
       SET debits_pending = a.debits_pending + d.debit,
           credits_pending = a.credits_pending + d.credit
      FROM deltas d
     WHERE a.id = d.account
       AND (NOT a.debits_must_not_exceed_credits OR d.debit <= 0
            OR a.credits_posted - a.debits_posted - a.debits_pending >= d.debit)
    RETURNING a.id
)
SELECT (SELECT count(*) FROM voided), (SELECT count(*) FROM void_entries),
       (SELECT count(*) FROM staged), (SELECT count(*) FROM deltas),
       (SELECT count(*) FROM applied);
END $$;
"""


#: pool_join_batch's arguments after this revision (r_first after r_version).
NEW_ARGS = (
    "uuid, timestamptz, integer, integer, integer[], "
    "uuid[], integer[], bigint[], text[], integer[], integer[], text[], text[], "
    "uuid[], uuid[], integer[], bigint[], text[], text[], "
    "text[], integer[], integer[], text[], text[], bigint[], text[], text[], text[], "
    "timestamptz[], timestamptz, text[]"
)


def _revision_0012() -> Any:
    """Migration 0012's module (pool_join_batch as it was, and its arguments)."""
    path = Path(__file__).with_name("0012_pool_join_batch.py")
    spec = importlib.util.spec_from_file_location("copool_migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    with op.batch_alter_table("pool_joins") as batch:
        batch.add_column(
            sa.Column("first_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE pool_joins SET first_version = version")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION pool_join_batch({_revision_0012().JOIN_BATCH_ARGS})")
        op.execute(JOIN_BATCH)
        op.execute(REPLACE_SET)


def downgrade() -> None:
    several = op.get_bind().execute(
        sa.text(
            "SELECT count(*) FROM pool_joins WHERE status = 'active' "
            "AND CASE WHEN first_version < 1 THEN 1 ELSE first_version END < version"
        )
    )
    if several.scalar():
        raise RuntimeError(
            "active joins hold several holds: settle or release them before downgrading"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION pool_join_batch({NEW_ARGS})")
        op.execute(_revision_0012().JOIN_BATCH)
        op.execute(_revision_0012().REPLACE_SET)
    with op.batch_alter_table("pool_joins", recreate="never") as batch:
        batch.drop_column("first_version")
