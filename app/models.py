"""Every table, imported in one place so Alembic sees the whole schema."""

from app.accounts.models import User
from app.idempotency import IdempotencyRecord
from payments.models import Account, ChainHead, Transfer

__all__ = ["Account", "ChainHead", "IdempotencyRecord", "Transfer", "User"]
