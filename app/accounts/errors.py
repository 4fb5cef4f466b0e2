"""What can go wrong with accounts."""

from __future__ import annotations

from app.errors import Category, DomainError


class EmailTaken(DomainError):
    """Another account already uses this email."""

    code = "email-taken"
    title = "Email already registered"


class InvalidCredentials(DomainError):
    """Email unknown or password wrong (deliberately not saying which)."""

    category = Category.UNAUTHENTICATED
    code = "invalid-credentials"
    title = "Invalid credentials"
