"""What can go wrong with carpool rides; app/problems.py maps each category to HTTP once."""

from __future__ import annotations

from app.errors import Category, DomainError


class RideError(DomainError):
    """Base of every carpool rides failure (each subclass sets its category, code and title)."""


class InvalidRide(RideError):
    """An offer or request that can never be valid (`errors` lists why)."""

    category = Category.INVALID
    code = "invalid-ride"
    title = "Invalid ride"


class OfferNotFound(RideError):
    category = Category.NOT_FOUND
    code = "offer-not-found"
    title = "Offer not found"


class RequestNotFound(RideError):
    category = Category.NOT_FOUND
    code = "request-not-found"
    title = "Ride request not found"


class MatchNotFound(RideError):
    category = Category.NOT_FOUND
    code = "match-not-found"
    title = "Match not found"


class MatchConflict(RideError):
    """The match (or offer, or request) is not in a state that allows this."""

    code = "match-conflict"
    title = "Not possible in this state"


class NoSeatsLeft(RideError):
    """The offer has fewer free seats than the rider asked for (someone accepted first)."""

    code = "no-seats-left"
    title = "No seats left"


class ProposalExpired(RideError):
    code = "proposal-expired"
    title = "The proposal expired"


class RideUnderWay(RideError):
    """The rider cancels an accepted ride after its pickup time (a driver who never came is a
    complaint; the fare hold is released if the ride is never completed)."""

    code = "ride-under-way"
    title = "The ride is under way"
