"""What can go wrong with group-buy pools; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import Category, DomainError


class GroupBuyError(DomainError):
    """Base of every group-buy pools failure (each subclass sets its category, code and title)."""


class InvalidPool(GroupBuyError):
    """The pool as sent can never be created (`errors` lists why)."""

    category = Category.INVALID
    code = "invalid-pool"
    title = "Invalid pool"


class PoolNotFound(GroupBuyError):
    category = Category.NOT_FOUND
    code = "pool-not-found"
    title = "Pool not found"


class JoinNotFound(GroupBuyError):
    category = Category.NOT_FOUND
    code = "join-not-found"
    title = "Join not found"


class PoolFull(GroupBuyError):
    """The join would take the pool past its max_quantity; nothing was reserved or held."""

    code = "pool-full"
    title = "Pool full"


class PoolClosed(GroupBuyError):
    """The pool is no longer open (or its deadline passed)."""

    code = "pool-closed"
    title = "Pool closed"


class JoinNotActive(GroupBuyError):
    """The join was left, charged or released already: there is nothing to leave."""

    code = "join-not-active"
    title = "The join is no longer active"


class MinimumNotReached(GroupBuyError):
    code = "minimum-not-reached"
    title = "The pool has not reached its minimum"


class NotOrganizer(GroupBuyError):
    category = Category.FORBIDDEN
    code = "not-organizer"
    title = "Only the organizer may do this"


class OrganizerCannotJoin(GroupBuyError):
    code = "organizer-cannot-join"
    title = "The organizer cannot join their own pool"


class JoinConflict(GroupBuyError):
    """Two joins of one member to one pool at the same moment: one waits, the other retries."""

    code = "join-conflict"
    title = "Another join is in progress"
