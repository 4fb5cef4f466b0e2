"""Use cases of rides: one function per user or job action, taking a session and `now`.

Drivers post offers and riders post requests; the batch matcher (`match_regions`) pairs them
region by region with the pure engine in matching/ and writes proposals; the driver accepts (a
seat taken with one conditional UPDATE, the rider's fare held into the ride's escrow, one unit of
work) or declines (the pair is never proposed again); completion captures the fare and pays the
driver less the platform fee. Every ledger id derives from the match (`ride:match:<id>:fare`,
`settle:match:<id>:payout`), so a retried use case cannot move money twice.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import h3
import msgspec
import structlog
from sqlalchemy import Table, func, or_, select, true, update

from app.db import AsyncSession, on_postgres, one_of
from app.errors import body_errors
from app.uow import UnitOfWork, use_case
from matching.assignment import Proposal, propose_matches
from matching.fare import fare_minor, settle_match
from matching.feasibility import Rider, Stop, StopKind, Trip
from matching.geometry import Point
from payments import ledger
from payments.errors import UnknownCurrency
from payments.models import AccountKind
from payments.money import MAX_AMOUNT_MINOR, fee_minor, is_supported_currency
from payments.records import TransferSpec, escrow, platform_revenue
from payments.records import wallet as wallet_account
from rides.config import RideConfig
from rides.errors import (
    InvalidRide,
    MatchConflict,
    MatchNotFound,
    NoSeatsLeft,
    OfferNotFound,
    ProposalExpired,
    RequestNotFound,
    RideUnderWay,
)
from rides.models import (
    LIVE_MATCH,
    Match,
    MatchStatus,
    Offer,
    OfferStatus,
    RequestStatus,
    RideRequest,
)
from trust import service as trust
from trust.config import TrustConfig
from trust.models import PartyRole, SubjectType
from trust.policy import Action, Decision, Verdict

log = structlog.get_logger("copool.rides")

OFFERS: Table = Offer.__table__  # type: ignore[attr-defined]
REQUESTS: Table = RideRequest.__table__  # type: ignore[attr-defined]
MATCHES: Table = Match.__table__  # type: ignore[attr-defined]

#: Fare holds outlive the departure by this much, so a late completion can still capture them.
HOLD_GRACE = timedelta(days=7)
#: The most a driver may detour, and the longest a window may be.
MAX_DETOUR_KM = 200.0
#: The shortest ride (road km) worth offering or asking.
MIN_TRIP_KM = 0.1
#: A batch gives each trip at most this many new riders.
MAX_NEW_RIDERS = 4
#: A batch takes at most this many requests (the most urgent first) and offers: the size the
#: batch solver is measured at (bench/matching.py: 20,000 x 4,000 in about 2 s).
MAX_BATCH_REQUESTS = 20_000
MAX_BATCH_OFFERS = 4_000

#: Schedules a matching run (after the unit of work commits).
Scheduler = Callable[[], Awaitable[Any]]


class Place(msgspec.Struct, frozen=True):
    lat: float
    lon: float


class OfferDraft(msgspec.Struct, frozen=True, kw_only=True):
    origin: Place
    destination: Place
    departure_at: datetime
    seats: int
    price_per_km_minor: int
    currency: str
    max_detour_km: float


class RequestDraft(msgspec.Struct, frozen=True, kw_only=True):
    origin: Place
    destination: Place
    earliest_departure: datetime
    latest_departure: datetime
    seats: int


#: A batch covers at most this many regions (a cell and two rings of neighbours).
MAX_BATCH_REGIONS = 19


def region_of(lat: float, lon: float, config: RideConfig) -> str:
    """The matcher's region of a place: its h3 cell at the region resolution."""
    return str(h3.latlng_to_cell(lat, lon, config.region_resolution))


def region_clusters(regions: Sequence[str], limit: int = MAX_BATCH_REGIONS) -> list[list[str]]:
    """The regions grouped into batches: neighbouring regions together (connected groups, cut
    into pieces of at most `limit` in breadth-first order), so that riders of neighbouring
    regions competing for the same offers are assigned by one solver, not one region after the
    other; regions apart from each other are batches of their own, which workers run at once."""
    left = set(regions)
    clusters: list[list[str]] = []
    for start in sorted(regions):
        if start not in left:
            continue
        left.discard(start)
        group, queue = [], [start]
        while queue:
            region = queue.pop(0)
            group.append(region)
            near = sorted(str(cell) for cell in h3.grid_disk(region, 1) if cell in left)
            left.difference_update(near)
            queue.extend(near)
        clusters.extend(sorted(group[i : i + limit]) for i in range(0, len(group), limit))
    return clusters


def _offer(row: Any) -> Offer:
    return Offer(**row._mapping)


def _request(row: Any) -> RideRequest:
    return RideRequest(**row._mapping)


def _match(row: Any) -> Match:
    return Match(**row._mapping)


def _route_errors(origin: Place, destination: Place, config: RideConfig) -> list[str]:
    errors = []
    start, end = Point(origin.lat, origin.lon), Point(destination.lat, destination.lon)
    if config.router.distance_km(start, end) < MIN_TRIP_KM:
        errors.append("origin and destination must be at least 100 m apart")
    return errors


async def _gate(
    session: AsyncSession,
    *,
    user_id: UUID,
    action: Action,
    amount_minor: int,
    currency: str,
    config: TrustConfig,
    now: datetime,
) -> Decision:
    decision = await trust.evaluate(
        session,
        user_id=user_id,
        action=action,
        amount_minor=amount_minor,
        currency=currency,
        now=now,
        rules=config.rules,
        params=config.score,
    )
    return trust.require_allowed(decision)


async def _create(
    uow: UnitOfWork,
    row: Offer | RideRequest,
    user_id: UUID,
    action: Action,
    trust_config: TrustConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> None:
    """Ask the gate (deny: 403), insert the offer or request, schedule a matching run."""
    async with uow:
        await _gate(
            uow.session,
            user_id=user_id,
            action=action,
            amount_minor=0,
            currency=getattr(row, "currency", "CNY"),
            config=trust_config,
            now=now,
        )
        uow.session.add(row)
        await uow.session.flush()
        if schedule is not None:
            uow.after_commit(schedule)
        await uow.commit()


def _largest_fare_minor(draft: OfferDraft, config: RideConfig) -> int:
    """At least any fare the offer can earn: a rider's own road distance is at most the
    driver's route (its direct road distance plus the detour allowed), for every seat."""
    start = Point(draft.origin.lat, draft.origin.lon)
    end = Point(draft.destination.lat, draft.destination.lon)
    route_km = config.router.distance_km(start, end) + draft.max_detour_km
    return math.ceil(draft.price_per_km_minor * draft.seats * route_km)


@use_case
async def post_offer(
    uow: UnitOfWork,
    *,
    driver_id: UUID,
    draft: OfferDraft,
    trust_config: TrustConfig,
    config: RideConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> Offer:
    """A driver offers seats on a trip (the gate asks for the driver role and insurance)."""
    errors = _route_errors(draft.origin, draft.destination, config)
    if not now < draft.departure_at <= now + config.max_ahead:
        errors.append("departure_at must be in the future and within 14 days")
    if not 0 <= draft.max_detour_km <= MAX_DETOUR_KM:
        errors.append(f"max_detour_km must be within [0, {MAX_DETOUR_KM:g}]")
    elif not errors and _largest_fare_minor(draft, config) > MAX_AMOUNT_MINOR:
        errors.append(
            "price_per_km_minor x seats x the trip's km (with its detour) must stay within "
            f"{MAX_AMOUNT_MINOR} minor units"
        )
    if errors:
        raise InvalidRide("; ".join(errors), errors=body_errors(errors))
    if not is_supported_currency(draft.currency):
        raise UnknownCurrency(f"{draft.currency!r} is not an active ISO 4217 currency")
    offer = Offer(
        driver_id=driver_id,
        origin_lat=draft.origin.lat,
        origin_lon=draft.origin.lon,
        destination_lat=draft.destination.lat,
        destination_lon=draft.destination.lon,
        region=region_of(draft.origin.lat, draft.origin.lon, config),
        departure_at=draft.departure_at,
        seats=draft.seats,
        seats_free=draft.seats,
        price_per_km_minor=draft.price_per_km_minor,
        currency=draft.currency,
        max_detour_km=draft.max_detour_km,
        status=OfferStatus.OPEN.value,
        created_at=now,
    )
    await _create(uow, offer, driver_id, Action.OFFER_RIDE, trust_config, schedule, now)
    return offer


@use_case
async def post_request(
    uow: UnitOfWork,
    *,
    rider_id: UUID,
    draft: RequestDraft,
    trust_config: TrustConfig,
    config: RideConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> RideRequest:
    """A rider asks for seats from a place to a place, leaving within a window."""
    errors = _route_errors(draft.origin, draft.destination, config)
    if draft.latest_departure <= draft.earliest_departure:
        errors.append("latest_departure must be after earliest_departure")
    if draft.latest_departure <= now:
        errors.append("latest_departure must be in the future")
    if draft.latest_departure > now + config.max_ahead:
        # (an offer departs within 14 days: a window closing later could never all be served)
        errors.append("latest_departure must be within 14 days")
    if draft.latest_departure - draft.earliest_departure > config.max_ahead:
        errors.append("the window may be at most 14 days long")
    if errors:
        raise InvalidRide("; ".join(errors), errors=body_errors(errors))
    request = RideRequest(
        rider_id=rider_id,
        origin_lat=draft.origin.lat,
        origin_lon=draft.origin.lon,
        destination_lat=draft.destination.lat,
        destination_lon=draft.destination.lon,
        region=region_of(draft.origin.lat, draft.origin.lon, config),
        earliest_departure=draft.earliest_departure,
        latest_departure=draft.latest_departure,
        seats=draft.seats,
        status=RequestStatus.OPEN.value,
        created_at=now,
    )
    await _create(uow, request, rider_id, Action.REQUEST_RIDE, trust_config, schedule, now)
    return request


# -- matching -------------------------------------------------------------------------------------


async def regions_to_match(session: AsyncSession, *, now: datetime) -> list[str]:
    """Regions with open requests whose window has not passed."""
    rows = await session.execute(
        select(REQUESTS.c.region)
        .where(REQUESTS.c.status == RequestStatus.OPEN.value, REQUESTS.c.latest_departure > now)
        .distinct()
    )
    return sorted(rows.scalars())


def _seconds(when: datetime, epoch: datetime) -> float:
    return (when - epoch).total_seconds()


def _rider(request: RideRequest, epoch: datetime) -> Rider:
    return Rider(
        pickup=Point(request.origin_lat, request.origin_lon),
        dropoff=Point(request.destination_lat, request.destination_lon),
        seats=request.seats,
        earliest_pickup_s=_seconds(request.earliest_departure, epoch),
        latest_pickup_s=_seconds(request.latest_departure, epoch),
    )


def _trip(offer: Offer, live: Sequence[tuple[Match, RideRequest]], epoch: datetime) -> Trip:
    """The offer as matching sees it, with the riders it already carries (or was proposed), their
    stops in the order of the times they were promised."""
    riders = tuple(_rider(request, epoch) for _, request in live)
    events = sorted(
        [(_seconds(m.pickup_eta, epoch), 0, i) for i, (m, _) in enumerate(live)]
        + [(_seconds(m.dropoff_eta, epoch), 1, i) for i, (m, _) in enumerate(live)]
    )
    stops = tuple(
        Stop(i, StopKind.PICKUP if kind == 0 else StopKind.DROPOFF) for _, kind, i in events
    )
    return Trip(
        origin=Point(offer.origin_lat, offer.origin_lon),
        destination=Point(offer.destination_lat, offer.destination_lon),
        departure_s=_seconds(offer.departure_at, epoch),
        seats=offer.seats,
        max_detour_km=offer.max_detour_km,
        riders=riders,
        stops=stops,
        promised_etas_s=tuple(
            (_seconds(m.pickup_eta, epoch), _seconds(m.dropoff_eta, epoch)) for m, _ in live
        ),
    )


def _own_pairs(offers: Sequence[Offer], requests: Sequence[RideRequest]) -> set[tuple[int, int]]:
    """(trip, rider) pairs where the driver would carry themself: never proposed."""
    asked: dict[UUID, list[int]] = {}
    for index, request in enumerate(requests):
        asked.setdefault(request.rider_id, []).append(index)
    return {(t, r) for t, offer in enumerate(offers) for r in asked.get(offer.driver_id, ())}


def _payable_groups(
    offers: Sequence[Offer], requests: Sequence[RideRequest], wallets: dict[UUID, set[str]]
) -> list[tuple[list[int], list[int]]]:
    """The batch split by what riders can pay: (offer indices, request indices) per currency of
    the offers, the requests of riders with a wallet in it (or none yet); free offers (a fare of
    0 holds nothing) are one group with every request. A rider is never proposed a fare in a
    currency they hold no wallet in: its accept could only be refused (402). The largest group
    first; one group, the whole batch, when every rider can pay every offer."""
    by_key: dict[str | None, list[int]] = {}
    for t, offer in enumerate(offers):
        by_key.setdefault(offer.currency if offer.price_per_km_minor else None, []).append(t)
    groups = []
    for key, trips in sorted(by_key.items(), key=lambda item: (-len(item[1]), item[0] or "")):
        riders = [
            r
            for r, request in enumerate(requests)
            if key is None or not (held := wallets.get(request.rider_id)) or key in held
        ]
        groups.append((trips, riders))
    return groups


async def _write_proposal(
    session: AsyncSession,
    offer: Offer,
    request: RideRequest,
    proposal: Proposal,
    config: RideConfig,
    now: datetime,
) -> bool:
    """The proposal as a Match, the request marked proposed; False if it was not (its fare out
    of the ledger's bounds, or the request no longer open)."""
    try:
        fare = fare_minor(
            price_per_km_minor=offer.price_per_km_minor,
            direct_km=proposal.rider_km,
            seats=request.seats,
        )
    except ValueError as exc:  # (post_offer bounds fares; an older offer may not be)
        log.warning("proposal skipped", offer_id=str(offer.id), error=str(exc))
        return False
    moved = await session.execute(
        update(REQUESTS)
        .where(REQUESTS.c.id == request.id, REQUESTS.c.status == RequestStatus.OPEN.value)
        .values(status=RequestStatus.PROPOSED.value)
        .returning(REQUESTS.c.id)
    )
    if moved.first() is None:
        return False
    session.add(
        Match(
            offer_id=offer.id,
            request_id=request.id,
            driver_id=offer.driver_id,
            rider_id=request.rider_id,
            seats=request.seats,
            status=MatchStatus.PROPOSED.value,
            pickup_eta=now + timedelta(seconds=proposal.pickup_eta_s),
            dropoff_eta=now + timedelta(seconds=proposal.dropoff_eta_s),
            detour_km=round(proposal.detour_km, 3),
            fare_minor=fare,
            currency=offer.currency,
            expires_at=proposal_expiry(offer, config, now),
            created_at=now,
            updated_at=now,
        )
    )
    return True


def proposal_expiry(offer: Offer, config: RideConfig, now: datetime) -> datetime:
    """ttl from now, or `proposal_lead` before departure, whichever comes first (at the latest,
    the departure itself)."""
    expiry = min(now + config.proposal_ttl, offer.departure_at - config.proposal_lead)
    return expiry if expiry > now else offer.departure_at


#: Matching batches solved at once in a process (each spreads its chunks over the cores).
SOLVER_THREADS = 2
_SOLVER = ThreadPoolExecutor(SOLVER_THREADS, thread_name_prefix="copool-solver")


@use_case
async def match_regions(
    uow: UnitOfWork, *, regions: Sequence[str], config: RideConfig, now: datetime
) -> int:
    """One batch: the open requests of some regions (one, or a group of neighbours: see
    `region_clusters`) and the open offers of them and their neighbours, assigned together by
    the batch solver; answers how many proposals were made.

    The offers are locked (ascending id) and the requests too (skipping those another batch
    holds) for the unit of work, so two batches that share an offer take turns, and each sees
    the other's proposals: a seat is never proposed twice."""
    if not 1 <= len(regions) <= MAX_BATCH_REGIONS:
        raise ValueError(f"a batch covers 1 to {MAX_BATCH_REGIONS} regions, not {len(regions)}")
    async with uow:
        session = uow.session
        area = sorted({str(cell) for region in regions for cell in h3.grid_disk(region, 1)})
        offers_query = (
            select(OFFERS)
            .where(
                OFFERS.c.region.in_(area),
                OFFERS.c.status == OfferStatus.OPEN.value,
                OFFERS.c.departure_at > now,
                OFFERS.c.seats_free > 0,
            )
            .order_by(OFFERS.c.id)  # the lock order
            .limit(MAX_BATCH_OFFERS)
        )
        requests_query = (
            select(REQUESTS)
            .where(
                REQUESTS.c.region.in_(list(regions)),
                REQUESTS.c.status == RequestStatus.OPEN.value,
                REQUESTS.c.latest_departure > now,
            )
            # Locked with SKIP LOCKED, which never waits: no lock order needed.
            .order_by(REQUESTS.c.latest_departure, REQUESTS.c.id)
            .limit(MAX_BATCH_REQUESTS)
        )
        if on_postgres(session):
            offers_query = offers_query.with_for_update()
            requests_query = requests_query.with_for_update(skip_locked=True)
        offers = [_offer(r) for r in (await session.execute(offers_query)).all()]
        requests = [_request(r) for r in (await session.execute(requests_query)).all()]
        if not offers or not requests:
            return 0
        offer_ids = [o.id for o in offers]
        live_rows = await session.execute(
            select(MATCHES, REQUESTS)
            .join(REQUESTS, REQUESTS.c.id == MATCHES.c.request_id)
            .where(MATCHES.c.offer_id.in_(offer_ids), MATCHES.c.status.in_(LIVE_MATCH))
        )
        match_columns = len(MATCHES.c)
        live: dict[UUID, list[tuple[Match, RideRequest]]] = {o.id: [] for o in offers}
        for row in live_rows.all():
            match = Match(**dict(zip(MATCHES.c.keys(), row[:match_columns], strict=True)))
            request = RideRequest(**dict(zip(REQUESTS.c.keys(), row[match_columns:], strict=True)))
            live[match.offer_id].append((match, request))
        tried = await session.execute(
            select(MATCHES.c.offer_id, MATCHES.c.request_id).where(
                MATCHES.c.offer_id.in_(offer_ids),
                MATCHES.c.request_id.in_([r.id for r in requests]),
            )
        )
        trips: list[Trip] = []
        usable: list[Offer] = []
        for offer in offers:
            try:
                trips.append(_trip(offer, live[offer.id], now))
            except ValueError as exc:  # a plan that no longer validates takes no new riders
                log.warning("offer skipped by the matcher", offer_id=str(offer.id), error=str(exc))
                continue
            usable.append(offer)
        wallets = await ledger.wallet_currencies(session, list({r.rider_id for r in requests}))
        tried_pairs = set(tried.all())
        made, proposed = 0, set[UUID]()
        for offer_ix, request_ix in _payable_groups(usable, requests, wallets):
            group_offers = [usable[i] for i in offer_ix]
            group_requests = [requests[j] for j in request_ix if requests[j].id not in proposed]
            if not group_requests:
                continue
            trip_of = {offer.id: i for i, offer in enumerate(group_offers)}
            rider_of = {request.id: i for i, request in enumerate(group_requests)}
            excluded = {
                (trip_of[o], rider_of[r]) for o, r in tried_pairs if o in trip_of and r in rider_of
            } | _own_pairs(group_offers, group_requests)
            # The solver (a second or two for the largest batch) runs off the event loop, so
            # that the worker's other jobs and its Redis connections are not kept waiting; in
            # threads of its own, not the loop's default executor (its host-name lookups for
            # new connections would queue behind batches).
            solve = functools.partial(
                propose_matches,
                [trips[i] for i in offer_ix],
                [_rider(request, now) for request in group_requests],
                router=config.router,
                limits=config.limits,
                resolution=config.h3_resolution,
                max_new_riders_per_trip=MAX_NEW_RIDERS,
                excluded=excluded,
            )
            assignment = await asyncio.get_running_loop().run_in_executor(_SOLVER, solve)
            for proposal in assignment.proposals:
                offer, request = group_offers[proposal.trip], group_requests[proposal.rider]
                if await _write_proposal(session, offer, request, proposal, config, now):
                    proposed.add(request.id)
                    made += 1
        await session.flush()
        await uow.commit()
    return made


# -- the driver's answer, and the ride ------------------------------------------------------------


async def _locked_match(session: AsyncSession, match_id: UUID, mine: Any) -> Match:
    """The match (where `mine` holds) with its offer's row and then its own locked: every use
    case that changes a ride locks offer, match, request in that order, so none deadlocks."""
    row = (await session.execute(select(MATCHES).where(MATCHES.c.id == match_id, mine))).first()
    if row is None:
        raise MatchNotFound(f"no match {match_id} of yours")
    if not on_postgres(session):  # (one writer at a time: what was read stands)
        return _match(row)
    await session.execute(
        select(OFFERS.c.id)
        .where(OFFERS.c.id == row.offer_id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: what its UPDATEs take
    )
    locked = select(MATCHES).where(MATCHES.c.id == match_id).with_for_update()
    return _match((await session.execute(locked)).one())


async def _driver_match(session: AsyncSession, match_id: UUID, user_id: UUID) -> Match:
    return await _locked_match(session, match_id, MATCHES.c.driver_id == user_id)


async def _move_match(
    session: AsyncSession, match: Match, to: MatchStatus, now: datetime, **values: Any
) -> Match:
    """One transition of a match, from the status it was read in (409 if it changed)."""
    moved = await session.execute(
        update(MATCHES)
        .where(MATCHES.c.id == match.id, MATCHES.c.status == match.status)
        .values(status=to.value, updated_at=now, **values)
        .returning(*MATCHES.c)
    )
    row = moved.first()
    if row is None:
        raise MatchConflict(f"this match is no longer {match.status}")
    return _match(row)


async def _set_request(
    session: AsyncSession, request_id: UUID, to: RequestStatus, *, unless: Sequence[str] = ()
) -> None:
    query = update(REQUESTS).where(REQUESTS.c.id == request_id)
    if unless:
        query = query.where(REQUESTS.c.status.not_in(list(unless)))
    await session.execute(query.values(status=to.value))


async def _give_seats(session: AsyncSession, offer_id: UUID, seats: int) -> None:
    await session.execute(
        update(OFFERS).where(OFFERS.c.id == offer_id).values(seats_free=OFFERS.c.seats_free + seats)
    )


def fare_hold_id(match_id: UUID) -> str:
    return f"ride:match:{match_id}:fare"


def ride_escrow(match: Match) -> Any:
    return escrow(AccountKind.RIDE_ESCROW, match.id, match.currency)


@use_case
async def accept_match(
    uow: UnitOfWork,
    *,
    match_id: UUID,
    driver_id: UUID,
    trust_config: TrustConfig,
    now: datetime,
) -> Match:
    """The driver accepts: a seat taken (one conditional UPDATE: never more riders than seats)
    and the rider's fare held from their wallet into the ride's escrow, in one unit of work."""
    async with uow:
        session = uow.session
        match = await _driver_match(session, match_id, driver_id)
        if match.status != MatchStatus.PROPOSED:
            raise MatchConflict(f"this match is {match.status}, not proposed")
        if match.expires_at <= now:
            raise ProposalExpired("this proposal expired; the request is back in matching")
        driver = await _gate(
            session,
            user_id=driver_id,
            action=Action.ACCEPT_MATCH,
            amount_minor=match.fare_minor,
            currency=match.currency,
            config=trust_config,
            now=now,
        )
        taken = await session.execute(
            update(OFFERS)
            .where(
                OFFERS.c.id == match.offer_id,
                OFFERS.c.status == OfferStatus.OPEN.value,
                OFFERS.c.departure_at > now,
                OFFERS.c.seats_free >= match.seats,
            )
            .values(seats_free=OFFERS.c.seats_free - match.seats)
            .returning(OFFERS.c.departure_at)
        )
        departure = taken.scalar()
        if departure is None:
            raise NoSeatsLeft("the offer has no seat left for this rider (or it closed)")
        rider = await trust.evaluate(
            session,
            user_id=match.rider_id,
            action=Action.REQUEST_RIDE,
            amount_minor=match.fare_minor,
            currency=match.currency,
            now=now,
            rules=trust_config.rules,
            params=trust_config.score,
        )
        if rider.verdict is Verdict.DENY:
            raise MatchConflict("the rider can no longer ride: " + ", ".join(rider.reasons))
        # A new driver's or rider's dear ride holds a deposit from each who owes one.
        for user_id, decision in ((driver_id, driver), (match.rider_id, rider)):
            if decision.verdict is Verdict.REQUIRE_DEPOSIT:
                await trust.take_deposit(
                    session,
                    user_id=user_id,
                    subject_type=SubjectType.MATCH,
                    subject_id=match.id,
                    amount_minor=decision.deposit_minor,
                    currency=match.currency,
                    expires_at=departure + HOLD_GRACE + trust_config.deposit_ttl,
                    now=now,
                )
        if match.fare_minor > 0:
            await ledger.hold(
                session,
                TransferSpec(
                    id=fare_hold_id(match.id),
                    debit=wallet_account(match.rider_id, match.currency),
                    credit=ride_escrow(match),
                    amount_minor=match.fare_minor,
                    kind="ride_fare",
                    ref=f"match:{match.id}",
                    expires_at=departure + HOLD_GRACE,
                ),
                now=now,
            )
        match = await _move_match(
            session,
            match,
            MatchStatus.ACCEPTED,
            now,
            hold_id=fare_hold_id(match.id) if match.fare_minor > 0 else None,
        )
        await _set_request(session, match.request_id, RequestStatus.MATCHED)
        await uow.commit()
    return match


@use_case
async def decline_match(
    uow: UnitOfWork,
    *,
    match_id: UUID,
    driver_id: UUID,
    schedule: Scheduler | None,
    now: datetime,
) -> Match:
    """The driver declines: the request goes back to matching; this pair is never proposed
    again."""
    async with uow:
        session = uow.session
        match = await _driver_match(session, match_id, driver_id)
        if match.status != MatchStatus.PROPOSED:
            raise MatchConflict(f"this match is {match.status}, not proposed")
        match = await _move_match(session, match, MatchStatus.DECLINED, now)
        await _set_request(session, match.request_id, RequestStatus.OPEN)
        if schedule is not None:
            uow.after_commit(schedule)
        await uow.commit()
    return match


async def _charge_rider_fee(session: AsyncSession, match: Match, fee: int, now: datetime) -> None:
    """Capture `fee` of the fare hold (the rest goes back) and pay it to the driver."""
    assert match.hold_id is not None
    await ledger.capture(session, hold_id=match.hold_id, amount_minor=fee, now=now)
    await ledger.transfer(
        session,
        TransferSpec(
            id=f"settle:match:{match.id}:cancel_fee",
            debit=ride_escrow(match),
            credit=wallet_account(match.driver_id, match.currency),
            amount_minor=fee,
            kind="ride_cancel_fee",
            ref=f"match:{match.id}",
        ),
        now=now,
    )


@use_case
async def complete_match(
    uow: UnitOfWork,
    *,
    match_id: UUID,
    driver_id: UUID,
    trust_config: TrustConfig,
    config: RideConfig,
    now: datetime,
) -> Match:
    """The driver completes the ride: the fare captured, the driver paid less the platform fee,
    the driver and the rider parties of a rateable transaction."""
    async with uow:
        session = uow.session
        match = await _driver_match(session, match_id, driver_id)
        if match.status != MatchStatus.ACCEPTED:
            raise MatchConflict(f"this match is {match.status}, not accepted")
        if now < match.pickup_eta:
            raise MatchConflict("a ride can be completed once its pickup time has come")
        await _gate(
            session,
            user_id=driver_id,
            action=Action.PAYOUT,
            amount_minor=match.fare_minor,
            currency=match.currency,
            config=trust_config,
            now=now,
        )
        if match.hold_id:
            await ledger.capture(session, hold_id=match.hold_id, now=now)
            split = settle_match(match.fare_minor, platform_fee_bps=config.fee_bp)
            parts = [
                ("payout", wallet_account(driver_id, match.currency), split.payout_minor),
                ("fee", platform_revenue(match.currency), split.fee_minor),
            ]
            await ledger.post_linked(
                session,
                [
                    TransferSpec(
                        id=f"settle:match:{match.id}:{name}",
                        debit=ride_escrow(match),
                        credit=account,
                        amount_minor=amount,
                        kind=f"ride_{name}",
                        ref=f"match:{match.id}",
                    )
                    for name, account, amount in parts
                    if amount > 0
                ],
                now=now,
            )
        match = await _move_match(session, match, MatchStatus.COMPLETED, now)
        await _set_request(session, match.request_id, RequestStatus.COMPLETED)
        await trust.register_transaction(
            session,
            subject_type=SubjectType.MATCH,
            subject_id=match.id,
            parties=[
                trust.Party(driver_id, PartyRole.DRIVER),
                trust.Party(match.rider_id, PartyRole.RIDER),
            ],
            completed_at=now,
            currency=match.currency,
        )
        await trust.release_after(
            session,
            subject_type=SubjectType.MATCH,
            subject_id=match.id,
            user_ids=[match.rider_id, driver_id],
            when=now + trust_config.rating_window,
        )
        await uow.commit()
    return match


def _late(match: Match, config: RideConfig, now: datetime) -> bool:
    return now >= match.pickup_eta - config.late_cancel_window


async def _end_match(
    session: AsyncSession,
    match: Match,
    *,
    by_rider: bool,
    no_show: bool,
    config: RideConfig,
    now: datetime,
) -> Match:
    """End a live match early: release (or, for a rider's late cancel or no-show, charge the
    fee), give the seats back, and put the request where it belongs."""
    fee = 0
    overdue_at = match.dropoff_eta + config.late_cancel_window
    # A ride its driver has not completed long after its drop-off time: the driver's doing.
    drivers_fault = by_rider and not no_show and now >= overdue_at
    under_way = match.pickup_eta <= now < overdue_at
    if match.status == MatchStatus.ACCEPTED and by_rider and not no_show and under_way:
        raise RideUnderWay(
            "the ride is under way: if it is not completed, it can be called off from "
            f"{overdue_at.isoformat()}"
        )
    if match.status == MatchStatus.ACCEPTED:
        late = no_show or _late(match, config, now)
        if by_rider and late and not drivers_fault and match.hold_id:
            fee = fee_minor(match.fare_minor, config.late_cancel_fee_bp)
        if fee > 0:
            await _charge_rider_fee(session, match, fee, now)
        elif match.hold_id:
            await ledger.void(session, hold_id=match.hold_id, now=now)
        if no_show or drivers_fault:  # the one at fault forfeits a deposit to the other
            at_fault, other = (
                (match.rider_id, match.driver_id) if no_show else (match.driver_id, match.rider_id)
            )
            await trust.forfeit_deposits(
                session,
                subject_type=SubjectType.MATCH,
                subject_id=match.id,
                user_id=at_fault,
                beneficiary_id=other,
                now=now,
                if_held=True,
            )
        # Every deposit of the ride not forfeited above goes back.
        await trust.release_deposits(
            session, subject_type=SubjectType.MATCH, subject_id=match.id, now=now
        )
        if late:
            blamed = match.rider_id if by_rider and not drivers_fault else match.driver_id
            await trust.record_cancellation(session, user_id=blamed)
        await _give_seats(session, match.offer_id, match.seats)
    who = "no_show" if no_show else "rider" if by_rider else "driver"
    ended = await _move_match(
        session, match, MatchStatus.CANCELLED, now, cancelled_by=who, fee_minor=fee
    )
    # A rider who cancels (or did not show) is done; a driver's cancel sends the rider back to
    # matching.
    await _set_request(
        session,
        match.request_id,
        RequestStatus.CANCELLED if by_rider else RequestStatus.OPEN,
        unless=[RequestStatus.CANCELLED.value],
    )
    return ended


@use_case
async def cancel_match(
    uow: UnitOfWork,
    *,
    match_id: UUID,
    user_id: UUID,
    config: RideConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> Match:
    """Either party ends a proposed or accepted match before the ride: the hold is released; a
    rider cancelling within the late window pays the late-cancel fee to the driver."""
    async with uow:
        session = uow.session
        match = await _locked_match(
            session, match_id, or_(MATCHES.c.driver_id == user_id, MATCHES.c.rider_id == user_id)
        )
        if match.status not in LIVE_MATCH:
            raise MatchConflict(f"this match is {match.status}: nothing to cancel")
        by_rider = match.rider_id == user_id and match.driver_id != user_id
        match = await _end_match(
            session, match, by_rider=by_rider, no_show=False, config=config, now=now
        )
        if schedule is not None and not by_rider:
            uow.after_commit(schedule)
        await uow.commit()
    return match


@use_case
async def report_no_show(
    uow: UnitOfWork, *, match_id: UUID, driver_id: UUID, config: RideConfig, now: datetime
) -> Match:
    """The rider did not show up: the late-cancel fee is charged, any deposit the policy took
    is forfeited to the driver, and it counts against the rider."""
    async with uow:
        session = uow.session
        match = await _driver_match(session, match_id, driver_id)
        if match.status != MatchStatus.ACCEPTED:
            raise MatchConflict(f"this match is {match.status}, not accepted")
        if now < match.pickup_eta:
            raise MatchConflict("a no-show can be reported once the pickup time has come")
        match = await _end_match(
            session, match, by_rider=True, no_show=True, config=config, now=now
        )
        await uow.commit()
    return match


@use_case
async def cancel_offer(
    uow: UnitOfWork,
    *,
    offer_id: UUID,
    driver_id: UUID,
    config: RideConfig,
    schedule: Scheduler | None,
    now: datetime,
) -> Offer:
    """The driver calls the trip off: its proposals end, accepted riders' holds are released and
    their requests go back to matching."""
    async with uow:
        session = uow.session
        offer = await _own_offer(session, offer_id, driver_id, lock=True)
        if offer.status != OfferStatus.OPEN:
            raise MatchConflict(f"this offer is already {offer.status}")
        await _end_offer_matches(session, offer, config=config, now=now)
        row = (
            await session.execute(
                update(OFFERS)
                .where(OFFERS.c.id == offer.id, OFFERS.c.status == OfferStatus.OPEN.value)
                .values(status=OfferStatus.CANCELLED.value)
                .returning(*OFFERS.c)
            )
        ).first()
        if row is None:
            raise MatchConflict("this offer changed meanwhile")
        if schedule is not None:
            uow.after_commit(schedule)
        await uow.commit()
    return _offer(row)


async def _end_offer_matches(
    session: AsyncSession, offer: Offer, *, config: RideConfig, now: datetime
) -> None:
    query = (
        select(MATCHES)
        .where(MATCHES.c.offer_id == offer.id, MATCHES.c.status.in_(LIVE_MATCH))
        .order_by(MATCHES.c.id)  # (after the offer's row: the lock order)
    )
    if on_postgres(session):
        query = query.with_for_update()
    for row in (await session.execute(query)).all():
        await _end_match(
            session, _match(row), by_rider=False, no_show=False, config=config, now=now
        )


@use_case
async def cancel_request(
    uow: UnitOfWork, *, request_id: UUID, rider_id: UUID, config: RideConfig, now: datetime
) -> RideRequest:
    """The rider withdraws the request; a live match ends as a rider's cancel would."""
    async with uow:
        session = uow.session
        await _own_request(session, request_id, rider_id)
        live_query = select(MATCHES.c.id).where(
            MATCHES.c.request_id == request_id, MATCHES.c.status.in_(LIVE_MATCH)
        )
        # The lock order: the live match's offer and the match, then the request.
        live_id = (await session.execute(live_query)).scalar()
        live = None
        if live_id is not None:
            live = await _locked_match(session, live_id, MATCHES.c.rider_id == rider_id)
        request = await _own_request(session, request_id, rider_id, lock=True)
        proposed_meanwhile = (await session.execute(live_query)).scalar()
        if proposed_meanwhile is not None and proposed_meanwhile != live_id:
            # (a batch proposed it while this waited for the request: rare, out of order)
            live = await _locked_match(session, proposed_meanwhile, MATCHES.c.rider_id == rider_id)
        if request.status not in (
            RequestStatus.OPEN,
            RequestStatus.PROPOSED,
            RequestStatus.MATCHED,
        ):
            raise MatchConflict(f"this request is already {request.status}")
        if live is not None and live.status in LIVE_MATCH:
            await _end_match(session, live, by_rider=True, no_show=False, config=config, now=now)
        await _set_request(session, request.id, RequestStatus.CANCELLED)
        await uow.commit()
    return RideRequest(**{**request.model_dump(), "status": RequestStatus.CANCELLED.value})


# -- sweeps ---------------------------------------------------------------------------------------


@use_case
async def expire_due(uow: UnitOfWork, *, now: datetime, limit: int = 500) -> int:
    """Proposals past their expiry end (their requests back to matching); offers past their
    departure close (their proposals end); requests whose window passed unmatched expire.
    Idempotent: each change is a conditional UPDATE of the status it expects."""
    async with uow:
        session = uow.session
        departed = (
            (
                await session.execute(
                    update(OFFERS)
                    .where(OFFERS.c.status == OfferStatus.OPEN.value, OFFERS.c.departure_at <= now)
                    .values(status=OfferStatus.CLOSED.value)
                    .returning(OFFERS.c.id)
                )
            )
            .scalars()
            .all()
        )
        stale = MATCHES.c.expires_at <= now
        if departed:
            stale = or_(stale, MATCHES.c.offer_id.in_(list(departed)))
        expired = (
            await session.execute(
                select(MATCHES.c.id, MATCHES.c.request_id)
                .where(MATCHES.c.status == MatchStatus.PROPOSED.value, stale)
                .limit(limit)
            )
        ).all()
        for match_id, request_id in expired:
            ended = await session.execute(
                update(MATCHES)
                .where(MATCHES.c.id == match_id, MATCHES.c.status == MatchStatus.PROPOSED.value)
                .values(status=MatchStatus.EXPIRED.value, updated_at=now)
                .returning(MATCHES.c.id)
            )
            if ended.first() is not None:
                await session.execute(
                    update(REQUESTS)
                    .where(
                        REQUESTS.c.id == request_id,
                        REQUESTS.c.status == RequestStatus.PROPOSED.value,
                    )
                    .values(status=RequestStatus.OPEN.value)
                )
        passed = await session.execute(
            update(REQUESTS)
            .where(
                REQUESTS.c.status == RequestStatus.OPEN.value,
                REQUESTS.c.latest_departure <= now,
            )
            .values(status=RequestStatus.EXPIRED.value)
        )
        await uow.commit()
    return len(departed) + len(expired) + int(getattr(passed, "rowcount", 0) or 0)


async def unfinished_rides(session: AsyncSession, *, now: datetime, limit: int) -> list[UUID]:
    """Accepted rides never completed by the time their fare hold lapses (departure plus
    HOLD_GRACE)."""
    rows = await session.execute(
        select(MATCHES.c.id)
        .join(OFFERS, OFFERS.c.id == MATCHES.c.offer_id)
        .where(
            MATCHES.c.status == MatchStatus.ACCEPTED.value,
            OFFERS.c.departure_at <= now - HOLD_GRACE,
        )
        .order_by(MATCHES.c.id)
        .limit(limit)
    )
    return list(rows.scalars())


@use_case
async def end_unfinished(uow: UnitOfWork, *, match_id: UUID, now: datetime) -> bool:
    """End an unfinished ride (see `unfinished_rides`): the hold and deposits released (unless
    the ledger's expiry sweep already did), the match cancelled as `unfinished`, the request
    expired; nobody is charged. False if it was completed or ended meanwhile."""
    async with uow:
        session = uow.session
        match = await _locked_match(session, match_id, true())
        if match.status != MatchStatus.ACCEPTED:
            return False
        if match.hold_id:
            await ledger.release(session, hold_id=match.hold_id, now=now)
        await trust.release_deposits(
            session, subject_type=SubjectType.MATCH, subject_id=match.id, now=now
        )
        await _move_match(session, match, MatchStatus.CANCELLED, now, cancelled_by="unfinished")
        await _set_request(session, match.request_id, RequestStatus.EXPIRED)
        await uow.commit()
    return True


async def next_due(session: AsyncSession, *, now: datetime) -> datetime | None:
    """When `expire_due` next has work: the first proposal to expire, offer to depart or request
    window to pass (each an indexed minimum); None when nothing waits."""
    firsts = [
        select(func.min(MATCHES.c.expires_at)).where(
            MATCHES.c.status == MatchStatus.PROPOSED.value
        ),
        select(func.min(OFFERS.c.departure_at)).where(OFFERS.c.status == OfferStatus.OPEN.value),
        select(func.min(REQUESTS.c.latest_departure)).where(
            REQUESTS.c.status == RequestStatus.OPEN.value
        ),
    ]
    times = [when for query in firsts if (when := (await session.execute(query)).scalar())]
    return min((_aware(when) for when in times), default=None)


def _aware(when: datetime) -> datetime:
    """An aggregate's datetime (SQLite answers a naive UTC one) as UTC aware."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -- reads ----------------------------------------------------------------------------------------


async def _own_offer(
    session: AsyncSession, offer_id: UUID, driver_id: UUID, *, lock: bool = False
) -> Offer:
    query = select(OFFERS).where(OFFERS.c.id == offer_id, OFFERS.c.driver_id == driver_id)
    if lock and on_postgres(session):
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise OfferNotFound(f"no offer {offer_id} of yours")
    return _offer(row)


async def _own_request(
    session: AsyncSession, request_id: UUID, rider_id: UUID, *, lock: bool = False
) -> RideRequest:
    query = select(REQUESTS).where(REQUESTS.c.id == request_id, REQUESTS.c.rider_id == rider_id)
    if lock and on_postgres(session):
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise RequestNotFound(f"no ride request {request_id} of yours")
    return _request(row)


async def get_offer(session: AsyncSession, *, offer_id: UUID, driver_id: UUID) -> Offer:
    return await _own_offer(session, offer_id, driver_id)


async def get_request(
    session: AsyncSession, *, request_id: UUID, rider_id: UUID
) -> tuple[RideRequest, Match | None]:
    """The rider's request and its current match (live, else the latest completed or ended)."""
    request = await _own_request(session, request_id, rider_id)
    return request, (await current_matches(session, [request_id])).get(request_id)


async def current_matches(session: AsyncSession, request_ids: Sequence[UUID]) -> dict[UUID, Match]:
    """Each of these requests' current match, if it has one: the live one, else the latest
    completed (a page of requests' in one statement)."""
    if not request_ids:
        return {}
    rows = await session.execute(
        select(MATCHES)
        .where(
            one_of(session, MATCHES.c.request_id, request_ids),
            MATCHES.c.status.in_([*LIVE_MATCH, MatchStatus.COMPLETED.value]),
        )
        .order_by(MATCHES.c.row_id.desc())
    )
    current: dict[UUID, Match] = {}
    for row in rows.all():
        current.setdefault(row.request_id, _match(row))  # the newest first
    return current


async def _newest_first(
    session: AsyncSession, table: Table, owner: Any, limit: int, before: int | None
) -> list[Any]:
    """A page of rows matching `owner` (a condition), newest first, after cursor `before`."""
    query = select(table).where(owner).order_by(table.c.row_id.desc()).limit(limit)
    if before is not None:
        query = query.where(table.c.row_id < before)
    return list((await session.execute(query)).all())


async def offer_matches(
    session: AsyncSession, *, offer_id: UUID, driver_id: UUID, limit: int, before: int | None
) -> list[Match]:
    await _own_offer(session, offer_id, driver_id)
    rows = await _newest_first(session, MATCHES, MATCHES.c.offer_id == offer_id, limit, before)
    return [_match(row) for row in rows]


async def my_offers(
    session: AsyncSession, *, driver_id: UUID, limit: int, before: int | None
) -> list[Offer]:
    rows = await _newest_first(session, OFFERS, OFFERS.c.driver_id == driver_id, limit, before)
    return [_offer(row) for row in rows]


async def my_requests(
    session: AsyncSession, *, rider_id: UUID, limit: int, before: int | None
) -> list[tuple[RideRequest, Match | None]]:
    """A page of the rider's requests, newest first, each with its current match."""
    rows = await _newest_first(session, REQUESTS, REQUESTS.c.rider_id == rider_id, limit, before)
    requests = [_request(row) for row in rows]
    matches = await current_matches(session, [request.id for request in requests])
    return [(request, matches.get(request.id)) for request in requests]
