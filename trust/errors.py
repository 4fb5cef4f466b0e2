"""What can go wrong with trust; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import DomainError


class TrustError(DomainError):
    """Base of every trust failure (each subclass sets its category, code and title)."""
