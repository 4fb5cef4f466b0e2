"""Every table, imported in one place so Alembic sees the whole schema."""

from app.accounts.models import User
from app.idempotency import IdempotencyRecord
from groupbuy.models import Join, Pool
from payments.models import Account, ChainHead, Transfer
from rides.models import Match, Offer, RideRequest
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
    "Match",
    "Offer",
    "Pool",
    "Rating",
    "Reputation",
    "RideRequest",
    "Transfer",
    "TrustParty",
    "TrustTransaction",
    "User",
]
