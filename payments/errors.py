"""What can go wrong when money moves; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import Category, DomainError


class PaymentError(DomainError):
    """Base of every payments failure."""


class InsufficientFunds(PaymentError):
    """The source account's available balance does not cover the amount."""

    category = Category.PAYMENT_REQUIRED
    code = "insufficient-funds"
    title = "Insufficient funds"


class PaymentDeclined(PaymentError):
    """The funding provider refused the payment."""

    category = Category.PAYMENT_REQUIRED
    code = "payment-declined"
    title = "Payment declined"


class UnknownCurrency(PaymentError):
    """Not an active ISO 4217 currency."""

    category = Category.INVALID
    code = "unknown-currency"
    title = "Unknown currency"


class CurrencyMismatch(PaymentError):
    """Two things that must share a currency do not."""

    category = Category.INVALID
    code = "currency-mismatch"
    title = "Currency mismatch"


class InvalidTransfer(PaymentError):
    """An amount, id, kind or reference outside what the operation allows."""

    category = Category.INVALID
    code = "invalid-amount"
    title = "Invalid transfer"


class TransferIdConflict(PaymentError):
    """The transfer id was used before for a different transfer."""

    code = "transfer-id-conflict"
    title = "Transfer id already used"


class TransferNotFound(PaymentError):
    """No transfer with that id (or not one the caller may see)."""

    category = Category.NOT_FOUND
    code = "not-found"
    title = "Not Found"


class HoldNotPending(PaymentError):
    """The hold was already captured, voided or expired in another way."""

    code = "hold-not-pending"
    title = "Hold is not pending"


class HoldExpired(PaymentError):
    """The hold passed its expiry; it can only be voided (the sweep does it)."""

    code = "hold-expired"
    title = "Hold expired"


class RefundExceedsCaptured(PaymentError):
    """Refunds of a transfer may not add up to more than it moved."""

    code = "refund-exceeds-captured"
    title = "Refund too large"


class FundingUnconfirmed(PaymentError):
    """The provider has not confirmed the payment yet; retry with the same Idempotency-Key."""

    category = Category.UNAVAILABLE
    code = "payment-unconfirmed"
    title = "Payment not confirmed yet"
