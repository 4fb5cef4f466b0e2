"""What the ledger talks in: account references, transfer specs and stored transfer records."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from payments.errors import CurrencyMismatch, InvalidTransfer, UnknownCurrency
from payments.models import AccountKind, TransferStatus
from payments.money import MAX_AMOUNT_MINOR, is_supported_currency

#: Limits of what a transfer row can hold (the columns' sizes), checked before any statement.
MAX_TRANSFER_ID_CHARS = 120
MAX_ACCOUNT_KEY_CHARS = 120
MAX_KIND_CHARS = 32
MAX_REF_CHARS = 160


class AccountRef(msgspec.Struct, frozen=True):
    """Names an account; it is opened the first time money moves through it."""

    key: str
    kind: AccountKind
    currency: str
    owner_id: UUID | None = None
    #: debits_must_not_exceed_credits: it can never go below zero (counting pending debits).
    limited: bool = True


def wallet(user_id: UUID, currency: str) -> AccountRef:
    return AccountRef(f"wallet:{user_id}:{currency}", AccountKind.WALLET, currency, user_id)


def escrow(kind: AccountKind, subject_id: UUID | str, currency: str) -> AccountRef:
    return AccountRef(f"{kind.value}:{subject_id}:{currency}", kind, currency)


def platform_revenue(currency: str) -> AccountRef:
    return AccountRef(f"platform_revenue:{currency}", AccountKind.PLATFORM_REVENUE, currency)


def insurance_fund(currency: str) -> AccountRef:
    return AccountRef(f"insurance_fund:{currency}", AccountKind.INSURANCE_FUND, currency)


def external_funding(provider: str, currency: str) -> AccountRef:
    """The provider's side of top-ups and withdrawals: money entering or leaving copool."""
    return AccountRef(
        f"external_funding:{provider}:{currency}",
        AccountKind.EXTERNAL_FUNDING,
        currency,
        limited=False,
    )


class TransferSpec(msgspec.Struct, frozen=True):
    """A transfer to make: `id` is its idempotency key."""

    id: str
    debit: AccountRef
    credit: AccountRef
    amount_minor: int
    kind: str
    ref: str
    #: For holds: when the sweep voids it (status `expired`) if nobody captured it.
    expires_at: datetime | None = None


class TransferRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer as stored: an immutable snapshot, detached from any session."""

    row_id: int
    id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency: str
    kind: str
    ref: str
    status: TransferStatus
    is_hold: bool
    created_at: datetime
    debit_key: str | None = None
    credit_key: str | None = None
    parent_id: str | None = None
    expires_at: datetime | None = None
    refunded_minor: int = 0
    seq: int | None = None
    hash: str | None = None


_RECORD_FIELDS = TransferRecord.__struct_fields__


def record(row: Any) -> TransferRecord:
    """A record from a mapping of the transfer table's columns."""
    values = {name: row[name] for name in _RECORD_FIELDS}
    values["status"] = TransferStatus(values["status"])
    return TransferRecord(**values)


def _check_length(what: str, value: str, limit: int) -> None:
    if not 0 < len(value) <= limit:
        raise InvalidTransfer(f"a transfer {what} has 1 to {limit} characters")


def validate_id(transfer_id: str) -> None:
    _check_length("id", transfer_id, MAX_TRANSFER_ID_CHARS)
    if (
        "/" in transfer_id
    ):  # `<hold id>/<status>` names a hold's resolution: no transfer may take it
        raise InvalidTransfer("a transfer id may not contain '/'")


def validate_capture(amount_minor: int | None) -> None:
    """A capture names a positive amount, or none (the whole hold)."""
    if amount_minor is not None and (isinstance(amount_minor, bool) or amount_minor <= 0):
        raise InvalidTransfer("a capture posts at least 1 minor unit")


def validate(spec: TransferSpec, *, is_hold: bool, now: datetime) -> None:
    """Refuse what a transfer row could not hold, before the database sees it (both backends)."""
    validate_id(spec.id)
    _check_length("kind", spec.kind, MAX_KIND_CHARS)
    _check_length("ref", spec.ref, MAX_REF_CHARS)
    for ref in (spec.debit, spec.credit):
        _check_length("account key", ref.key, MAX_ACCOUNT_KEY_CHARS)
    if isinstance(spec.amount_minor, bool) or not 0 < spec.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidTransfer(f"amount_minor must be between 1 and {MAX_AMOUNT_MINOR}")
    for currency in (spec.debit.currency, spec.credit.currency):
        if not is_supported_currency(currency):
            raise UnknownCurrency(f"unsupported currency {currency!r}")
    if spec.debit.currency != spec.credit.currency:
        raise CurrencyMismatch("both accounts of a transfer must hold the same currency")
    if spec.debit.key == spec.credit.key:
        raise InvalidTransfer("a transfer needs two different accounts")
    if is_hold and spec.expires_at is not None and spec.expires_at <= now:
        raise InvalidTransfer("a hold must expire in the future")


def row_values(spec: TransferSpec, *, is_hold: bool, now: datetime) -> dict[str, Any]:
    """The columns a new transfer row gets (account ids are resolved by the path that writes)."""
    return {
        "id": spec.id,
        "debit_key": spec.debit.key,
        "credit_key": spec.credit.key,
        "amount_minor": spec.amount_minor,
        "currency": spec.debit.currency,
        "kind": spec.kind,
        "ref": spec.ref,
        "status": TransferStatus.PENDING if is_hold else TransferStatus.POSTED,
        "is_hold": is_hold,
        "expires_at": spec.expires_at if is_hold else None,
        "created_at": now,
    }


def resolution_id(hold_id: str, status: TransferStatus) -> str:
    """The id of the entry that resolves a hold: one per hold, so a resolution happens once."""
    return f"{hold_id}/{status.value}"
