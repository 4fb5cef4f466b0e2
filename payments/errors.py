"""What can go wrong when money moves (mapped to problem details once, in app/errors.py)."""

from __future__ import annotations


class PaymentError(Exception):
    """Base of every payments failure."""


class InsufficientFunds(PaymentError):
    """The source account's available balance does not cover the amount."""


class UnknownCurrency(PaymentError):
    """Not an ISO 4217 currency copool supports."""


class CurrencyMismatch(PaymentError):
    """Two things that must share a currency do not."""


class InvalidAmount(PaymentError):
    """An amount outside what the operation allows."""


class TransferIdConflict(PaymentError):
    """The transfer id was used before for a different transfer."""


class TransferNotFound(PaymentError):
    """No transfer with that id (or not one the caller may see)."""


class HoldNotPending(PaymentError):
    """The hold was already captured, voided or expired in another way."""


class HoldExpired(PaymentError):
    """The hold passed its expiry; it can only be voided (the sweep does it)."""


class RefundExceedsCaptured(PaymentError):
    """Refunds of a transfer may not add up to more than it moved."""


class PaymentDeclined(PaymentError):
    """The funding provider refused the payment."""
