"""The rides controllers: parse, authorize, call the service, shape the answer.

What the caller may not see is 404: another driver's offer or match, another rider's request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from app.auth import Principal
from app.clock import in_utc
from app.db import AsyncSession
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    next_cursor,
)
from app.problems import problem_responses
from app.uow import UnitOfWork
from rides import service
from rides.config import RideConfig
from rides.models import Match, Offer, RideRequest
from rides.schemas import MatchOut, OfferIn, OfferOut, PlaceOut, RequestIn, RequestOut

IDEMPOTENT = {"idempotent": True}


def match_out(match: Match) -> MatchOut:
    return MatchOut(
        id=match.id,
        offer_id=match.offer_id,
        request_id=match.request_id,
        driver_id=match.driver_id,
        rider_id=match.rider_id,
        status=match.status,  # type: ignore[arg-type]
        seats=match.seats,
        pickup_eta=match.pickup_eta,
        dropoff_eta=match.dropoff_eta,
        detour_km=match.detour_km,
        fare_minor=match.fare_minor,
        currency=match.currency,
        expires_at=match.expires_at,
        cancelled_by=match.cancelled_by,
        fee_minor=match.fee_minor,
        created_at=match.created_at,
    )


def offer_out(offer: Offer) -> OfferOut:
    return OfferOut(
        id=offer.id,
        driver_id=offer.driver_id,
        origin=PlaceOut(offer.origin_lat, offer.origin_lon),
        destination=PlaceOut(offer.destination_lat, offer.destination_lon),
        departure_at=offer.departure_at,
        seats=offer.seats,
        seats_free=offer.seats_free,
        price_per_km_minor=offer.price_per_km_minor,
        currency=offer.currency,
        max_detour_km=offer.max_detour_km,
        status=offer.status,  # type: ignore[arg-type]
        created_at=offer.created_at,
    )


def request_out(request: RideRequest, match: Match | None = None) -> RequestOut:
    return RequestOut(
        id=request.id,
        rider_id=request.rider_id,
        origin=PlaceOut(request.origin_lat, request.origin_lon),
        destination=PlaceOut(request.destination_lat, request.destination_lon),
        earliest_departure=request.earliest_departure,
        latest_departure=request.latest_departure,
        seats=request.seats,
        status=request.status,  # type: ignore[arg-type]
        created_at=request.created_at,
        match=match_out(match) if match is not None else None,
    )


def _config(request: Request[Any, Any, State]) -> RideConfig:
    config: RideConfig = request.app.state.rides
    return config


def _schedule(request: Request[Any, Any, State]) -> service.Scheduler | None:
    schedule: service.Scheduler | None = getattr(request.app.state, "schedule_matching", None)
    return schedule


def _place(place: Any) -> service.Place:
    return service.Place(place.lat, place.lon)


class RideController(Controller):
    path = "/v1/rides"
    tags = ["rides"]

    @post(
        "/offers",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Offer seats on a trip (drivers with a verified, unexpired insurance policy)",
        responses=problem_responses(401, 403, 422),
    )
    async def post_offer(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[OfferIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> OfferOut:
        offer = await service.post_offer(
            uow,
            driver_id=principal.user_id,
            draft=service.OfferDraft(
                origin=_place(data.origin),
                destination=_place(data.destination),
                departure_at=in_utc(data.departure_at),
                seats=data.seats,
                price_per_km_minor=data.price_per_km_minor,
                currency=data.currency,
                max_detour_km=data.max_detour_km,
            ),
            trust_config=request.app.state.trust,
            config=_config(request),
            schedule=_schedule(request),
            now=now,
        )
        return offer_out(offer)

    @get(
        "/offers/{offer_id:uuid}",
        summary="One of your offers, with its free seats",
        responses=problem_responses(401, 404),
    )
    async def get_offer(
        self,
        offer_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
    ) -> OfferOut:
        return offer_out(
            await service.get_offer(reader, offer_id=offer_id, driver_id=principal.user_id)
        )

    @get(
        "/offers/{offer_id:uuid}/matches",
        summary="The matches of one of your offers, newest first",
        responses=problem_responses(401, 404, 422),
    )
    async def offer_matches(
        self,
        offer_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[MatchOut]:
        matches = await service.offer_matches(
            reader,
            offer_id=offer_id,
            driver_id=principal.user_id,
            limit=limit + 1,
            before=decode_cursor(cursor),
        )
        return Page(
            items=[match_out(m) for m in matches[:limit]],
            next_cursor=next_cursor(matches, limit, lambda m: m.row_id),
        )

    @post(
        "/offers/{offer_id:uuid}/cancel",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Call your trip off: proposals end, accepted riders' holds are released",
        responses=problem_responses(401, 404, 409),
    )
    async def cancel_offer(
        self,
        request: Request[Any, Any, State],
        offer_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> OfferOut:
        offer = await service.cancel_offer(
            uow,
            offer_id=offer_id,
            driver_id=principal.user_id,
            config=_config(request),
            schedule=_schedule(request),
            now=now,
        )
        return offer_out(offer)

    @post(
        "/requests",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Ask for seats from a place to a place, leaving within a window",
        responses=problem_responses(401, 403, 422),
    )
    async def post_request(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[RequestIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> RequestOut:
        created = await service.post_request(
            uow,
            rider_id=principal.user_id,
            draft=service.RequestDraft(
                origin=_place(data.origin),
                destination=_place(data.destination),
                earliest_departure=in_utc(data.earliest_departure),
                latest_departure=in_utc(data.latest_departure),
                seats=data.seats,
            ),
            trust_config=request.app.state.trust,
            config=_config(request),
            schedule=_schedule(request),
            now=now,
        )
        return request_out(created)

    @get(
        "/requests/{request_id:uuid}",
        summary="One of your requests, with its proposal or match",
        responses=problem_responses(401, 404),
    )
    async def get_request(
        self,
        request_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
    ) -> RequestOut:
        found, match = await service.get_request(
            reader, request_id=request_id, rider_id=principal.user_id
        )
        return request_out(found, match)

    @post(
        "/requests/{request_id:uuid}/cancel",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Withdraw your request (a late cancel of an accepted ride pays the fee)",
        responses=problem_responses(401, 404, 409),
    )
    async def cancel_request(
        self,
        request: Request[Any, Any, State],
        request_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> RequestOut:
        cancelled = await service.cancel_request(
            uow,
            request_id=request_id,
            rider_id=principal.user_id,
            config=_config(request),
            now=now,
        )
        return request_out(cancelled)

    @post(
        "/matches/{match_id:uuid}/accept",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Accept a proposal (driver): a seat is taken, the rider's fare is held",
        responses=problem_responses(401, 402, 403, 404, 409),
    )
    async def accept(
        self,
        request: Request[Any, Any, State],
        match_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> MatchOut:
        match = await service.accept_match(
            uow,
            match_id=match_id,
            driver_id=principal.user_id,
            trust_config=request.app.state.trust,
            now=now,
        )
        return match_out(match)

    @post(
        "/matches/{match_id:uuid}/decline",
        status_code=200,
        summary="Decline a proposal (driver): the request goes back to matching",
        responses=problem_responses(401, 404, 409),
    )
    async def decline(
        self,
        request: Request[Any, Any, State],
        match_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> MatchOut:
        match = await service.decline_match(
            uow,
            match_id=match_id,
            driver_id=principal.user_id,
            schedule=_schedule(request),
            now=now,
        )
        return match_out(match)

    @post(
        "/matches/{match_id:uuid}/complete",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Complete the ride (driver): the fare is captured, the driver paid less the fee",
        responses=problem_responses(401, 403, 404, 409),
    )
    async def complete(
        self,
        request: Request[Any, Any, State],
        match_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> MatchOut:
        match = await service.complete_match(
            uow,
            match_id=match_id,
            driver_id=principal.user_id,
            trust_config=request.app.state.trust,
            config=_config(request),
            now=now,
        )
        return match_out(match)

    @post(
        "/matches/{match_id:uuid}/cancel",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Cancel before the ride (either party): the hold is released, late fees apply",
        responses=problem_responses(401, 404, 409),
    )
    async def cancel(
        self,
        request: Request[Any, Any, State],
        match_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> MatchOut:
        match = await service.cancel_match(
            uow,
            match_id=match_id,
            user_id=principal.user_id,
            config=_config(request),
            schedule=_schedule(request),
            now=now,
        )
        return match_out(match)

    @post(
        "/matches/{match_id:uuid}/no-show",
        status_code=200,
        opt=IDEMPOTENT,
        summary="The rider did not show up (driver): the fee is charged, a deposit forfeited",
        responses=problem_responses(401, 404, 409),
    )
    async def no_show(
        self,
        request: Request[Any, Any, State],
        match_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> MatchOut:
        match = await service.report_no_show(
            uow,
            match_id=match_id,
            driver_id=principal.user_id,
            config=_config(request),
            now=now,
        )
        return match_out(match)


class MyRidesController(Controller):
    path = "/v1/me/rides"
    tags = ["rides"]

    @get(
        "",
        summary="Your offers (role=driver) or requests (role=rider), newest first",
        responses=problem_responses(401, 422),
    )
    async def my_rides(
        self,
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        role: FromQuery[Literal["driver", "rider"]] = "rider",
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[OfferOut | RequestOut]:
        before = decode_cursor(cursor)
        if role == "driver":
            offers = await service.my_offers(
                reader, driver_id=principal.user_id, limit=limit + 1, before=before
            )
            return Page(
                items=[offer_out(o) for o in offers[:limit]],
                next_cursor=next_cursor(offers, limit, lambda o: o.row_id),
            )
        requests = await service.my_requests(
            reader, rider_id=principal.user_id, limit=limit + 1, before=before
        )
        return Page(
            items=[request_out(r, match) for r, match in requests[:limit]],
            next_cursor=next_cursor(requests, limit, lambda pair: pair[0].row_id),
        )
