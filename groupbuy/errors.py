"""What can go wrong with group-buy pools; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import DomainError


class GroupBuyError(DomainError):
    """Base of every group-buy pools failure (each subclass sets its category, code and title)."""
