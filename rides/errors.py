"""What can go wrong with carpool rides; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import DomainError


class RideError(DomainError):
    """Base of every carpool rides failure (each subclass sets its category, code and title)."""
