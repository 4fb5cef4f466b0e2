"""ledger: resolve many holds in one statement (group commit for captures, voids, expiries)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Each element is claimed on its own, exactly as ledger_resolve does it: a hold that is not pending
(or not due) answers `unclaimed` and the caller replays or explains; a capture amount out of
range puts the claim back and answers CP422. The accounts of every hold in the batch are locked
first, in id order.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RESOLVE_BATCH = """
CREATE OR REPLACE FUNCTION ledger_resolve_batch(
    p_hold_ids text[], p_statuses text[], p_amounts bigint[], p_now timestamptz[]
) RETURNS TABLE (outcome text, transfer ledger_transfers) LANGUAGE plpgsql AS $$
DECLARE
    h ledger_transfers;
    v ledger_transfers;
    i integer;
    v_amount bigint;
    v_posted bigint;
BEGIN
    PERFORM 1 FROM ledger_accounts a
      WHERE a.id IN (SELECT t.debit_account_id FROM ledger_transfers t WHERE t.id = ANY (p_hold_ids)
                     UNION
                     SELECT t.credit_account_id FROM ledger_transfers t WHERE t.id = ANY (p_hold_ids))
      ORDER BY a.id FOR NO KEY UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_hold_ids, 1), 0) LOOP
        UPDATE ledger_transfers t SET status = p_statuses[i]
         WHERE t.id = p_hold_ids[i] AND t.is_hold AND t.status = 'pending'
           AND (p_statuses[i] <> 'posted' OR t.expires_at IS NULL OR t.expires_at > p_now[i])
           AND (p_statuses[i] <> 'expired' OR t.expires_at <= p_now[i])
        RETURNING t.* INTO h;
        IF NOT FOUND THEN
            outcome := 'unclaimed';
            transfer := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_amount := coalesce(p_amounts[i], h.amount_minor);
        IF v_amount <= 0 OR v_amount > h.amount_minor THEN
            UPDATE ledger_transfers t SET status = 'pending' WHERE t.row_id = h.row_id;
            outcome := 'CP422';
            transfer := h;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_posted := CASE WHEN p_statuses[i] = 'posted' THEN v_amount ELSE 0 END;
        UPDATE ledger_accounts a
           SET debits_pending = a.debits_pending - h.amount_minor,
               debits_posted = a.debits_posted + v_posted
         WHERE a.id = h.debit_account_id;
        UPDATE ledger_accounts a
           SET credits_pending = a.credits_pending - h.amount_minor,
               credits_posted = a.credits_posted + v_posted
         WHERE a.id = h.credit_account_id;
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount_minor,
                                      currency, kind, ref, status, is_hold, parent_id, created_at)
        VALUES (p_hold_ids[i] || '/' || p_statuses[i], h.debit_account_id, h.credit_account_id,
                v_amount, h.currency,
                CASE p_statuses[i] WHEN 'posted' THEN 'capture' WHEN 'voided' THEN 'void'
                                   ELSE 'expiry' END,
                h.ref, p_statuses[i], false, p_hold_ids[i], p_now[i])
        RETURNING * INTO v;
        outcome := 'ok';
        transfer := v;
        RETURN NEXT;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(RESOLVE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS ledger_resolve_batch(text[], text[], bigint[], timestamptz[])"
    )
