"""Every table, imported in one place so Alembic sees the whole schema."""

from app.accounts.models import User
from app.idempotency import IdempotencyRecord
from groupbuy.models import Join, Pool
from payments.models import Account, ChainHead, Transfer
from trust.models import (
    AuditEntry,
    Complaint,
    Deposit,
    InsurancePolicy,
    Rating,
    Reputation,
    TrustParty,
    TrustTransaction,
)

__all__ = [
    "Account",
    "AuditEntry",
    "ChainHead",
    "Complaint",
    "Deposit",
    "IdempotencyRecord",
    "InsurancePolicy",
    "Join",
    "Pool",
    "Rating",
    "Reputation",
    "Transfer",
    "TrustParty",
    "TrustTransaction",
    "User",
]
