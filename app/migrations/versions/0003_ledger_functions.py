"""ledger: PostgreSQL functions that stage a transfer and resolve a hold in one round trip

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

The same rules as payments.service's portable path (used on SQLite), run inside the database so
that a transfer costs one statement: idempotent insert, balance-limit check by conditional
UPDATE, account rows locked in id order (FOR NO KEY UPDATE: the transfer row's foreign keys hold
KEY SHARE locks on the same accounts, which FOR UPDATE would deadlock against). Errors carry our own SQLSTATEs: CP402 insufficient funds,
CP409 transfer id reused, CP422 invalid amount.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STAGE = """
CREATE OR REPLACE FUNCTION ledger_stage(
    p_id text, p_debit integer, p_credit integer, p_amount bigint, p_currency text,
    p_kind text, p_ref text, p_is_hold boolean, p_expires_at timestamptz, p_now timestamptz
) RETURNS ledger_transfers LANGUAGE plpgsql AS $$
DECLARE
    v ledger_transfers;
    v_pending bigint := CASE WHEN p_is_hold THEN p_amount ELSE 0 END;
    v_posted bigint := CASE WHEN p_is_hold THEN 0 ELSE p_amount END;
BEGIN
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount_minor, currency,
                                  kind, ref, status, is_hold, expires_at, created_at)
    VALUES (p_id, p_debit, p_credit, p_amount, p_currency, p_kind, p_ref,
            CASE WHEN p_is_hold THEN 'pending' ELSE 'posted' END, p_is_hold,
            CASE WHEN p_is_hold THEN p_expires_at END, p_now)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO v;
    IF NOT FOUND THEN  -- exactly once: the first call moved the money
        SELECT * INTO v FROM ledger_transfers WHERE id = p_id;
        IF (v.debit_account_id, v.credit_account_id, v.amount_minor, v.currency, v.kind, v.ref,
            v.is_hold) IS DISTINCT FROM
           (p_debit, p_credit, p_amount, p_currency, p_kind, p_ref, p_is_hold) THEN
            RAISE EXCEPTION 'transfer id % was used for another transfer', p_id
                USING ERRCODE = 'CP409';
        END IF;
        RETURN v;
    END IF;
    PERFORM 1 FROM ledger_accounts WHERE id IN (p_debit, p_credit) ORDER BY id FOR NO KEY UPDATE;
    UPDATE ledger_accounts
       SET debits_pending = debits_pending + v_pending, debits_posted = debits_posted + v_posted
     WHERE id = p_debit
       AND (NOT debits_must_not_exceed_credits
            OR credits_posted - debits_posted - debits_pending >= p_amount);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the source account has less than % % minor units available',
            p_amount, p_currency USING ERRCODE = 'CP402';
    END IF;
    UPDATE ledger_accounts
       SET credits_pending = credits_pending + v_pending, credits_posted = credits_posted + v_posted
     WHERE id = p_credit;
    RETURN v;
END $$;
"""

RESOLVE = """
CREATE OR REPLACE FUNCTION ledger_resolve(
    p_hold_id text, p_status text, p_amount bigint, p_now timestamptz
) RETURNS ledger_transfers LANGUAGE plpgsql AS $$
DECLARE
    h ledger_transfers;
    v ledger_transfers;
    v_amount bigint;
    v_posted bigint;
BEGIN
    UPDATE ledger_transfers SET status = p_status
     WHERE id = p_hold_id AND is_hold AND status = 'pending'
       AND (p_status <> 'posted' OR expires_at IS NULL OR expires_at > p_now)
       AND (p_status <> 'expired' OR expires_at <= p_now)
    RETURNING * INTO h;
    IF NOT FOUND THEN
        RETURN NULL;  -- not pending (or not due): the caller replays or explains
    END IF;
    v_amount := COALESCE(p_amount, h.amount_minor);
    IF v_amount <= 0 OR v_amount > h.amount_minor THEN
        RAISE EXCEPTION 'capture between 1 and the held % minor units', h.amount_minor
            USING ERRCODE = 'CP422';
    END IF;
    v_posted := CASE WHEN p_status = 'posted' THEN v_amount ELSE 0 END;
    PERFORM 1 FROM ledger_accounts
      WHERE id IN (h.debit_account_id, h.credit_account_id) ORDER BY id FOR NO KEY UPDATE;
    UPDATE ledger_accounts
       SET debits_pending = debits_pending - h.amount_minor,
           debits_posted = debits_posted + v_posted
     WHERE id = h.debit_account_id;
    UPDATE ledger_accounts
       SET credits_pending = credits_pending - h.amount_minor,
           credits_posted = credits_posted + v_posted
     WHERE id = h.credit_account_id;
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount_minor, currency,
                                  kind, ref, status, is_hold, parent_id, created_at)
    VALUES (p_hold_id || '/' || p_status, h.debit_account_id, h.credit_account_id, v_amount,
            h.currency,
            CASE p_status WHEN 'posted' THEN 'capture' WHEN 'voided' THEN 'void' ELSE 'expiry' END,
            h.ref, p_status, false, p_hold_id, p_now)
    RETURNING * INTO v;
    RETURN v;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(STAGE)
    op.execute(RESOLVE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS ledger_resolve(text, text, bigint, timestamptz)")
    op.execute(
        "DROP FUNCTION IF EXISTS ledger_stage(text, integer, integer, bigint, text, text, text, "
        "boolean, timestamptz, timestamptz)"
    )
