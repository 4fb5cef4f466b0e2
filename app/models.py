"""Every table, imported in one place so Alembic sees the whole schema."""

from app.accounts.models import User

__all__ = ["User"]
