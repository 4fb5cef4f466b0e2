"""Hot-path statements whose plans cannot read a pool's other rows

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

A flash crowd fills tables faster than autovacuum analyzes them, and a hot pool is never an
average one: the planner takes `pool_id = <the hot pool>` and `status = 'pending'` for a
handful of rows when they are thousands. Measured in the join benchmark (auto_explain), each
batch of joins read every pending hold of the database (the partial index of pending holds,
joined in a nested loop to the ids it voids: 10,325 rows for a batch that voided none) and
every join of its pool (the index on pool and status, for a batch raising 16): 6.5 ms a call
of `pool_join_batch`, growing with the crowd, with the pool's row locked all along.

- `ix_ledger_transfers_pending_expiry` is the sweeps' index and now says so: pending holds
  that have an expiry (`expires_at IS NOT NULL`, implied by the expiry sweep's `expires_at <=
  now` and said by the withdrawal sweep: every withdrawal has one). A lookup of holds by id
  that checks `status = 'pending'` no longer matches it, so it goes by the id index.
- `ix_ledger_transfers_parent_id` indexes only rows that have a parent (captures, voids,
  refunds): every hold and transfer wrote a NULL into it before.
- `ledger_replace_set` reads nothing for its voids when it is given no holds to void
  (`cardinality(p_void_ids) > 0` is a one-time filter of the plan: the statement runs empty).
- `pool_join_batch` finds the raised joins by id alone, and checks their pool on the rows it
  updated: `j.pool_id = p_pool` in the WHERE let the planner scan the pool's joins by the pool
  index. That statement, too, runs empty when no join is raised.

The two indexes are rebuilt inside the migration's transaction: ledger writes wait until they
are built (reads of the table too, for the moment each old index is dropped). On a large
ledger, run this migration in a quiet window.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"
PENDING_EXPIRING = "status = 'pending' AND expires_at IS NOT NULL"
HAS_PARENT = "parent_id IS NOT NULL"

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
    WITH raised AS (
        UPDATE pool_joins j
           SET quantity = u.quantity, held_minor = u.held, hold_id = u.hold,
               version = u.version, first_version = u.first,
               status = 'active', last_request = u.request, updated_at = p_now
          FROM unnest(r_id, r_quantity, r_held, r_hold, r_version, r_first, r_was, r_request)
               AS u(id, quantity, held, hold, version, first, was, request)
         WHERE j.id = u.id AND j.version = u.version - 1 AND j.status = u.was
           AND cardinality(r_id) > 0
        RETURNING j.pool_id
    )
    SELECT count(*) FILTER (WHERE pool_id = p_pool) INTO v_rows FROM raised;
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
     WHERE t.id = v.id AND t.is_hold AND t.status = 'pending' AND cardinality(p_void_ids) > 0
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


def _revision_0015() -> Any:
    """Migration 0015's module (the functions as they were)."""
    path = Path(__file__).with_name("0015_pool_join_top_up_holds.py")
    spec = importlib.util.spec_from_file_location("copool_migration_0015", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _indexes(pending: str, parent: str | None) -> None:
    op.drop_index("ix_ledger_transfers_pending_expiry", table_name="ledger_transfers")
    op.create_index(
        "ix_ledger_transfers_pending_expiry",
        "ledger_transfers",
        ["expires_at"],
        postgresql_where=sa.text(pending),
        sqlite_where=sa.text(pending),
    )
    op.drop_index("ix_ledger_transfers_parent_id", table_name="ledger_transfers")
    where = (
        {}
        if parent is None
        else {"postgresql_where": sa.text(parent), "sqlite_where": sa.text(parent)}
    )
    op.create_index("ix_ledger_transfers_parent_id", "ledger_transfers", ["parent_id"], **where)


def upgrade() -> None:
    _indexes(PENDING_EXPIRING, HAS_PARENT)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(JOIN_BATCH)
        op.execute(REPLACE_SET)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_revision_0015().JOIN_BATCH)
        op.execute(_revision_0015().REPLACE_SET)
    _indexes(PENDING, None)
