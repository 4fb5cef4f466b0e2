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


class Banned(DomainError):
    """The account is banned: it may not act, whatever its token says."""

    category = Category.FORBIDDEN
    code = "banned"
    title = "Account banned"


class UserNotFound(DomainError):
    """No account has this id or email."""

    category = Category.NOT_FOUND
    code = "user-not-found"
    title = "User not found"


class MemberRoleRequired(DomainError):
    """Every account keeps the member role; it cannot be revoked."""

    category = Category.INVALID
    code = "member-role-required"
    title = "The member role cannot be revoked"


class BlankDisplayName(DomainError):
    """Nothing visible is left of the display name once control and format characters go."""

    category = Category.INVALID
    code = "blank-display-name"
    title = "The display name is blank"


class EmailTooLong(DomainError):
    """The address is longer than can be stored once lower-cased (some letters, such as U+0130,
    lower-case to two characters)."""

    category = Category.INVALID
    code = "email-too-long"
    title = "The email address is too long"


class InvalidEmail(DomainError):
    """The address holds control or format characters (bidi overrides, zero widths), which
    would show one address as another wherever it is shown."""

    category = Category.INVALID
    code = "invalid-email"
    title = "The email address is not valid"
