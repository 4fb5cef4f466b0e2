"""ledger: transfers record the account keys they meant; Idempotency-Key leases

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

A transfer now stores the keys of the accounts it was asked to move money between
(`debit_key`, `credit_key`), beside the account ids it resolved, so `copool ledger verify` can
prove that no transfer landed on another account than the one its caller named. The staging
functions take keys and resolve ids themselves inside the transaction: nothing outside the
database can hand them a stale id. An element whose account does not exist yet answers CP404
(the caller opens the accounts and sends it again).

Idempotency keys get a lease (`locked_until`): a request that crashed mid-flight leaves its key
in progress only until the lease ends; a retry after that runs the request again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STAGE = """
CREATE OR REPLACE FUNCTION ledger_stage_keyed(
    p_id text, p_debit_key text, p_credit_key text, p_amount bigint, p_currency text,
    p_kind text, p_ref text, p_is_hold boolean, p_expires_at timestamptz, p_now timestamptz
) RETURNS ledger_transfers LANGUAGE plpgsql AS $$
DECLARE
    v ledger_transfers;
    v_debit integer;
    v_credit integer;
    v_pending bigint := CASE WHEN p_is_hold THEN p_amount ELSE 0 END;
    v_posted bigint := CASE WHEN p_is_hold THEN 0 ELSE p_amount END;
BEGIN
    SELECT id INTO v_debit FROM ledger_accounts WHERE key = p_debit_key;
    SELECT id INTO v_credit FROM ledger_accounts WHERE key = p_credit_key;
    IF v_debit IS NULL OR v_credit IS NULL THEN
        RAISE EXCEPTION 'account % or % is not open', p_debit_key, p_credit_key
            USING ERRCODE = 'CP404';
    END IF;
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, debit_key, credit_key,
                                  amount_minor, currency, kind, ref, status, is_hold, expires_at,
                                  created_at)
    VALUES (p_id, v_debit, v_credit, p_debit_key, p_credit_key, p_amount, p_currency, p_kind,
            p_ref, CASE WHEN p_is_hold THEN 'pending' ELSE 'posted' END, p_is_hold,
            CASE WHEN p_is_hold THEN p_expires_at END, p_now)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO v;
    IF NOT FOUND THEN  -- exactly once: the first call moved the money
        SELECT * INTO v FROM ledger_transfers WHERE id = p_id;
        IF (v.debit_account_id, v.credit_account_id, v.amount_minor, v.currency, v.kind, v.ref,
            v.is_hold) IS DISTINCT FROM
           (v_debit, v_credit, p_amount, p_currency, p_kind, p_ref, p_is_hold) THEN
            RAISE EXCEPTION 'transfer id % was used for another transfer', p_id
                USING ERRCODE = 'CP409';
        END IF;
        RETURN v;
    END IF;
    PERFORM 1 FROM ledger_accounts WHERE id IN (v_debit, v_credit) ORDER BY id FOR NO KEY UPDATE;
    UPDATE ledger_accounts
       SET debits_pending = debits_pending + v_pending, debits_posted = debits_posted + v_posted
     WHERE id = v_debit
       AND (NOT debits_must_not_exceed_credits
            OR credits_posted - debits_posted - debits_pending >= p_amount);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the source account has less than % % minor units available',
            p_amount, p_currency USING ERRCODE = 'CP402';
    END IF;
    UPDATE ledger_accounts
       SET credits_pending = credits_pending + v_pending, credits_posted = credits_posted + v_posted
     WHERE id = v_credit;
    RETURN v;
END $$;
"""

STAGE_BATCH = """
CREATE OR REPLACE FUNCTION ledger_stage_batch_keyed(
    p_ids text[], p_debit_keys text[], p_credit_keys text[], p_amounts bigint[],
    p_currencies text[], p_kinds text[], p_refs text[], p_is_holds boolean[],
    p_expires_at timestamptz[], p_now timestamptz[]
) RETURNS TABLE (outcome text, transfer ledger_transfers) LANGUAGE plpgsql AS $$
DECLARE
    v ledger_transfers;
    i integer;
    v_debit integer;
    v_credit integer;
    v_pending bigint;
    v_posted bigint;
BEGIN
    PERFORM 1 FROM ledger_accounts WHERE key = ANY (p_debit_keys || p_credit_keys)
      ORDER BY id FOR NO KEY UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        SELECT a.id INTO v_debit FROM ledger_accounts a WHERE a.key = p_debit_keys[i];
        SELECT a.id INTO v_credit FROM ledger_accounts a WHERE a.key = p_credit_keys[i];
        IF v_debit IS NULL OR v_credit IS NULL THEN
            outcome := 'CP404';
            transfer := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, debit_key,
                                      credit_key, amount_minor, currency, kind, ref, status,
                                      is_hold, expires_at, created_at)
        VALUES (p_ids[i], v_debit, v_credit, p_debit_keys[i], p_credit_keys[i], p_amounts[i],
                p_currencies[i], p_kinds[i], p_refs[i],
                CASE WHEN p_is_holds[i] THEN 'pending' ELSE 'posted' END,
                p_is_holds[i], CASE WHEN p_is_holds[i] THEN p_expires_at[i] END, p_now[i])
        ON CONFLICT (id) DO NOTHING
        RETURNING * INTO v;
        IF NOT FOUND THEN
            SELECT * INTO v FROM ledger_transfers t WHERE t.id = p_ids[i];
            outcome := CASE
                WHEN (v.debit_account_id, v.credit_account_id, v.amount_minor, v.currency,
                      v.kind, v.ref, v.is_hold) IS DISTINCT FROM
                     (v_debit, v_credit, p_amounts[i], p_currencies[i], p_kinds[i],
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
         WHERE a.id = v_debit
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
         WHERE a.id = v_credit;
        outcome := 'ok';
        transfer := v;
        RETURN NEXT;
    END LOOP;
END $$;
"""

OLD_FUNCTIONS = (
    "ledger_stage(text, integer, integer, bigint, text, text, text, boolean, timestamptz, "
    "timestamptz)",
    "ledger_stage_batch(text[], integer[], integer[], bigint[], text[], text[], text[], "
    "boolean[], timestamptz[], timestamptz[])",
)


def upgrade() -> None:
    with op.batch_alter_table("ledger_transfers") as batch:
        batch.add_column(sa.Column("debit_key", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("credit_key", sa.String(length=120), nullable=True))
    # Transfers written before this revision meant the accounts they landed on.
    op.execute(
        "UPDATE ledger_transfers SET "
        "debit_key = (SELECT key FROM ledger_accounts a WHERE a.id = debit_account_id), "
        "credit_key = (SELECT key FROM ledger_accounts a WHERE a.id = credit_account_id) "
        "WHERE parent_id IS NULL"
    )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute(STAGE)
    op.execute(STAGE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS ledger_stage_keyed(text, text, text, bigint, text, text, "
            "text, boolean, timestamptz, timestamptz)"
        )
        op.execute(
            "DROP FUNCTION IF EXISTS ledger_stage_batch_keyed(text[], text[], text[], bigint[], "
            "text[], text[], text[], boolean[], timestamptz[], timestamptz[])"
        )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("locked_until")
    with op.batch_alter_table("ledger_transfers") as batch:
        batch.drop_column("credit_key")
        batch.drop_column("debit_key")
