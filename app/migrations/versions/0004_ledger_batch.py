"""ledger: stage many independent transfers in one statement (group commit on PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Concurrent single transfers of one process are gathered into one call: one statement, one
commit. Each element succeeds or fails on its own (no exception, so no subtransaction): an
element whose source cannot afford it is removed again and answered CP402; a reused id with other
fields is answered CP409. Every account the batch touches is locked first, in id order, so
batches cannot deadlock with each other or with single transfers.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STAGE_BATCH = """
CREATE OR REPLACE FUNCTION ledger_stage_batch(
    p_ids text[], p_debits integer[], p_credits integer[], p_amounts bigint[],
    p_currencies text[], p_kinds text[], p_refs text[], p_is_holds boolean[],
    p_expires_at timestamptz[], p_now timestamptz[]
) RETURNS TABLE (outcome text, transfer ledger_transfers) LANGUAGE plpgsql AS $$
DECLARE
    v ledger_transfers;
    i integer;
    v_pending bigint;
    v_posted bigint;
BEGIN
    PERFORM 1 FROM ledger_accounts WHERE id = ANY (p_debits || p_credits)
      ORDER BY id FOR NO KEY UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount_minor,
                                      currency, kind, ref, status, is_hold, expires_at,
                                      created_at)
        VALUES (p_ids[i], p_debits[i], p_credits[i], p_amounts[i], p_currencies[i], p_kinds[i],
                p_refs[i], CASE WHEN p_is_holds[i] THEN 'pending' ELSE 'posted' END,
                p_is_holds[i], CASE WHEN p_is_holds[i] THEN p_expires_at[i] END, p_now[i])
        ON CONFLICT (id) DO NOTHING
        RETURNING * INTO v;
        IF NOT FOUND THEN
            SELECT * INTO v FROM ledger_transfers t WHERE t.id = p_ids[i];
            outcome := CASE
                WHEN (v.debit_account_id, v.credit_account_id, v.amount_minor, v.currency,
                      v.kind, v.ref, v.is_hold) IS DISTINCT FROM
                     (p_debits[i], p_credits[i], p_amounts[i], p_currencies[i], p_kinds[i],
                      p_refs[i], p_is_holds[i])
                THEN 'CP409' ELSE 'ok' END;
            transfer := v;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_pending := CASE WHEN p_is_holds[i] THEN p_amounts[i] ELSE 0 END;
        v_posted := CASE WHEN p_is_holds[i] THEN 0 ELSE p_amounts[i] END;
        UPDATE ledger_accounts a
           SET debits_pending = a.debits_pending + v_pending,
               debits_posted = a.debits_posted + v_posted
         WHERE a.id = p_debits[i]
           AND (NOT a.debits_must_not_exceed_credits
                OR a.credits_posted - a.debits_posted - a.debits_pending >= p_amounts[i]);
        IF NOT FOUND THEN
            DELETE FROM ledger_transfers t WHERE t.row_id = v.row_id;
            outcome := 'CP402';
            transfer := v;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE ledger_accounts a
           SET credits_pending = a.credits_pending + v_pending,
               credits_posted = a.credits_posted + v_posted
         WHERE a.id = p_credits[i];
        outcome := 'ok';
        transfer := v;
        RETURN NEXT;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(STAGE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS ledger_stage_batch(text[], integer[], integer[], bigint[], "
        "text[], text[], text[], boolean[], timestamptz[], timestamptz[])"
    )
