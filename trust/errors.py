"""What can go wrong with trust; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import Category, DomainError


class TrustError(DomainError):
    """Base of every trust failure (each subclass sets its category, code and title)."""


class NotAParty(TrustError):
    """The caller took no part in that completed transaction (or it does not exist)."""

    category = Category.FORBIDDEN
    code = "not-a-party"
    title = "Not a party of this transaction"


class NotACounterparty(TrustError):
    """The user named is not the caller's counterparty in that transaction."""

    category = Category.INVALID
    code = "not-a-counterparty"
    title = "Not a counterparty"


class AlreadyRated(TrustError):
    code = "already-rated"
    title = "Already rated"


class RatingWindowClosed(TrustError):
    code = "rating-window-closed"
    title = "The rating window has closed"


class UserNotFound(TrustError):
    category = Category.NOT_FOUND
    code = "user-not-found"
    title = "User not found"


class PolicyNotFound(TrustError):
    category = Category.NOT_FOUND
    code = "insurance-not-found"
    title = "Insurance policy not found"


class PolicyPending(TrustError):
    """A user has at most one policy waiting for a decision."""

    code = "insurance-pending"
    title = "A policy is already waiting for verification"


class PolicyDecided(TrustError):
    code = "insurance-decided"
    title = "This policy has already been decided"


class PolicyExpired(TrustError):
    category = Category.INVALID
    code = "insurance-expired"
    title = "The policy has expired"


class ComplaintNotFound(TrustError):
    category = Category.NOT_FOUND
    code = "complaint-not-found"
    title = "Complaint not found"


class AlreadyComplained(TrustError):
    code = "already-complained"
    title = "A complaint about this user and transaction already exists"


class ComplaintDecided(TrustError):
    code = "complaint-decided"
    title = "This complaint has already been decided"


class InvalidDecision(TrustError):
    category = Category.INVALID
    code = "invalid-decision"
    title = "Invalid decision"


class DepositNotHeld(TrustError):
    code = "deposit-not-held"
    title = "The deposit is no longer held"


class Denied(TrustError):
    """The trust gate refused the action; `reasons` says why (machine-readable codes)."""

    category = Category.FORBIDDEN
    code = "trust-denied"
    title = "Refused by the trust policy"


class ConflictOfInterest(TrustError):
    """An admin may not decide their own case (their complaint, their policy, their own ban)."""

    category = Category.FORBIDDEN
    code = "conflict-of-interest"
    title = "Conflict of interest"


class BlankText(TrustError):
    """Nothing is left of the text once control and formatting characters are removed."""

    category = Category.INVALID
    code = "blank-text"
    title = "Text is blank"
