"""The groupbuy controllers: parse, authorize, call the service, shape the answer."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from geopy.distance import geodesic
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.accounts.models import Role
from app.auth import Principal, require_role
from app.clock import in_utc
from app.db import AsyncSession
from app.idempotency import idempotent_id
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    encode_cursor,
    next_cursor,
)
from app.problems import problem_responses
from app.uow import UnitOfWork
from groupbuy import pricing, service
from groupbuy.admission import Admission
from groupbuy.models import JoinRecord, JoinStatus, Pool, PoolStatus
from groupbuy.schemas import (
    JoinIn,
    JoinOut,
    MyJoinOut,
    NextTierOut,
    PickupOut,
    PoolIn,
    PoolOut,
    TierOut,
)

IDEMPOTENT = {"idempotent": True}
KM_PER_DEGREE = 111.32
MAX_RADIUS_KM = 200.0
#: Candidate rows read per page asked for, when filtering by distance (bounded work per request).
NEAR_SCAN_FACTOR = 8


RadiusQuery = Annotated[
    float, QueryParameter(gt=0, le=MAX_RADIUS_KM, description="km around `near`; default 10")
]


def pool_out(pool: Pool, *, distance_km: float | None = None) -> PoolOut:
    tiers = service.tiers_of(pool)
    upcoming = pricing.next_tier(tiers, pool.committed_quantity)
    open_ = pool.status == PoolStatus.OPEN
    return PoolOut(
        id=pool.id,
        organizer_id=pool.organizer_id,
        title=pool.title,
        description=pool.description,
        currency=pool.currency,
        tiers=[TierOut(t.min_quantity, t.unit_price_minor) for t in tiers],
        min_quantity=pool.min_quantity,
        max_quantity=pool.max_quantity,
        deadline=pool.deadline,
        status=PoolStatus(pool.status).value,
        committed_quantity=pool.committed_quantity,
        participant_count=pool.participant_count,
        current_unit_price_minor=pool.final_unit_price_minor
        or pricing.unit_price(tiers, pool.committed_quantity),
        next_tier=NextTierOut(
            upcoming.min_quantity, upcoming.unit_price_minor, upcoming.quantity_needed
        )
        if upcoming and open_
        else None,
        final_unit_price_minor=pool.final_unit_price_minor,
        created_at=pool.created_at,
        pickup=PickupOut(pool.pickup_lat, pool.pickup_lon, pool.pickup_label or "")
        if pool.pickup_lat is not None and pool.pickup_lon is not None
        else None,
        protected=pool.protected,
        settled_at=pool.settled_at,
        distance_km=round(distance_km, 3) if distance_km is not None else None,
    )


def held_now(join: JoinRecord) -> int:
    """What the join's hold reserves now: nothing once it was captured or released."""
    return join.held_minor if join.status == JoinStatus.ACTIVE else 0


def join_out(join: JoinRecord) -> JoinOut:
    return JoinOut(
        id=join.id,
        pool_id=join.pool_id,
        quantity=join.quantity,
        held_minor=held_now(join),
        status=JoinStatus(join.status).value,
        charged_minor=join.charged_minor,
        created_at=join.created_at,
    )


#: Decimal degrees as clients write them: float() alone also took "1_0", "nan", "inf" and
#: digits of other scripts.
_DEGREES = r"\s*(-?\d{1,3}(?:\.\d{1,20})?)\s*"
_NEAR = re.compile(f"^{_DEGREES},{_DEGREES}$", re.ASCII)


def _near(near: str) -> tuple[float, float]:
    try:
        found = _NEAR.match(near)
        if found is None:
            raise ValueError(near)
        lat, lon = float(found[1]), float(found[2])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(near)
    except ValueError:
        raise ValidationException(
            "near must be lat,lon in degrees", extra=[{"key": "near", "message": "invalid"}]
        ) from None
    return lat, lon


def _box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """(south, west, north, east) around a point: every point within the radius lies inside."""
    dlat = radius_km / KM_PER_DEGREE
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    cos_lat = min(math.cos(math.radians(south)), math.cos(math.radians(north)))
    if cos_lat <= radius_km / (KM_PER_DEGREE * 180) or north >= 90 or south <= -90:
        return south, -180.0, north, 180.0  # near a pole: every longitude
    dlon = radius_km / (KM_PER_DEGREE * cos_lat)
    west, east = lon - dlon, lon + dlon
    if west < -180:
        west += 360
    if east > 180:
        east -= 360
    return south, west, north, east


def _schedule(request: Request[Any, Any, State]) -> service.Scheduler | None:
    schedule: service.Scheduler | None = getattr(request.app.state, "schedule_pool", None)
    return schedule


def _admission(request: Request[Any, Any, State]) -> Admission | None:
    admission: Admission | None = getattr(request.app.state, "admission", None)
    return admission


class PoolController(Controller):
    path = "/v1/pools"
    tags = ["pools"]

    @post(
        "",
        status_code=201,
        guards=[require_role(Role.ORGANIZER)],
        opt=IDEMPOTENT,
        summary="Open a group-buy pool (organizers)",
        description="Tiers sorted by quantity, the first at 1, unit prices strictly falling, at "
        "most 10; min_quantity <= max_quantity; the deadline 5 minutes to 30 days ahead. The "
        "trust gate may ask a deposit of the organizer of a high-value pool (or refuse, 403).",
        responses=problem_responses(401, 402, 403, 409, 422),
    )
    async def create(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[PoolIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PoolOut:
        state = request.app.state
        pool = await service.create_pool(
            uow,
            organizer_id=principal.user_id,
            draft=service.PoolDraft(
                title=data.title.strip(),
                description=data.description.strip(),
                currency=data.currency,
                tiers=[pricing.Tier(t.min_quantity, t.unit_price_minor) for t in data.tiers],
                min_quantity=data.min_quantity,
                max_quantity=data.max_quantity,
                deadline=in_utc(data.deadline),
                pickup_lat=data.pickup.lat if data.pickup else None,
                pickup_lon=data.pickup.lon if data.pickup else None,
                pickup_label=data.pickup.label.strip() if data.pickup else None,
                protected=data.protected,
            ),
            platform_fee_bp=state.settings.pool_fee_bp,
            config=state.trust,
            schedule=_schedule(request),
            now=now,
        )
        return pool_out(pool)

    @get(
        "",
        summary="Pools, newest first; by status and near a place",
        responses=problem_responses(401, 422),
    )
    async def list_pools(
        self,
        reader: NamedDependency[AsyncSession],
        status: FromQuery[PoolStatus | None] = None,
        near: FromQuery[str | None] = None,
        radius_km: RadiusQuery = 10.0,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[PoolOut]:
        before = decode_cursor(cursor)
        if near is None:
            pools = await service.list_pools(
                reader, status=status, box=None, limit=limit + 1, before=before
            )
            items = [pool_out(pool) for pool in pools[:limit]]
            return Page(items=items, next_cursor=next_cursor(pools, limit, lambda p: p.row_id))
        lat, lon = _near(near)
        scan = (limit + 1) * NEAR_SCAN_FACTOR
        candidates = await service.list_pools(
            reader, status=status, box=_box(lat, lon, radius_km), limit=scan, before=before
        )
        found: list[PoolOut] = []
        last_seen: int | None = None
        for pool in candidates:
            if len(found) == limit:
                break
            last_seen = pool.row_id
            point = (pool.pickup_lat or 0.0, pool.pickup_lon or 0.0)  # in the box: both set
            distance = geodesic((lat, lon), point).km
            if distance <= radius_km:
                found.append(pool_out(pool, distance_km=distance))
        more = len(candidates) == scan or (
            len(found) == limit and last_seen != candidates[-1].row_id
        )
        return Page(
            items=found, next_cursor=encode_cursor(last_seen) if more and last_seen else None
        )

    @get(
        "/{pool_id:uuid}",
        summary="One pool with its live progress",
        responses=problem_responses(401, 404),
    )
    async def get_pool(
        self, pool_id: FromPath[UUID], reader: NamedDependency[AsyncSession]
    ) -> PoolOut:
        return pool_out(await service.get_pool(reader, pool_id))

    @post(
        "/{pool_id:uuid}/joins",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Join a pool (or raise your quantity): holds quantity x the first tier's price",
        description="All or nothing: 409 pool-full (nothing reserved, nothing held), 409 "
        "pool-closed, 402 insufficient-funds, 403 when the trust gate refuses. A new user's "
        "large join also holds a deposit.",
        responses=problem_responses(401, 402, 403, 404, 409, 422),
    )
    async def join(
        self,
        request: Request[Any, Any, State],
        pool_id: FromPath[UUID],
        data: JSONBody[JoinIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> JoinOut:
        join = await service.join_pool(
            uow,
            pool_id=pool_id,
            user_id=principal.user_id,
            quantity=data.quantity,
            request_id=idempotent_id(request.scope),
            config=request.app.state.trust,
            schedule=_schedule(request),
            admission=_admission(request),
            now=now,
        )
        return join_out(join)

    @delete(
        "/{pool_id:uuid}/joins/{join_id:uuid}",
        status_code=200,
        summary="Leave a pool before it closes: the quantity returns, the hold is released",
        responses=problem_responses(401, 404, 409),
    )
    async def leave(
        self,
        request: Request[Any, Any, State],
        pool_id: FromPath[UUID],
        join_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> JoinOut:
        join = await service.leave_pool(
            uow,
            pool_id=pool_id,
            join_id=join_id,
            user_id=principal.user_id,
            admission=_admission(request),
            now=now,
        )
        return join_out(join)

    @post(
        "/{pool_id:uuid}/close",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Close the pool early once it reached its minimum (organizer): it succeeds now",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def close(
        self,
        request: Request[Any, Any, State],
        pool_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PoolOut:
        pool = await service.close_pool(
            uow,
            pool_id=pool_id,
            user_id=principal.user_id,
            schedule=_schedule(request),
            admission=_admission(request),
            now=now,
        )
        return pool_out(pool)

    @post(
        "/{pool_id:uuid}/cancel",
        status_code=200,
        opt=IDEMPOTENT,
        summary="Cancel the pool (organizer): every hold is released",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def cancel(
        self,
        request: Request[Any, Any, State],
        pool_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PoolOut:
        pool = await service.cancel_pool(
            uow,
            pool_id=pool_id,
            user_id=principal.user_id,
            schedule=_schedule(request),
            admission=_admission(request),
            now=now,
        )
        return pool_out(pool)


class MyJoinsController(Controller):
    path = "/v1/me/joins"
    tags = ["pools"]

    @get("", summary="The caller's joins, newest first", responses=problem_responses(401, 422))
    async def my_joins(
        self,
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        status: FromQuery[JoinStatus | None] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[MyJoinOut]:
        views = await service.my_joins(
            reader,
            user_id=principal.user_id,
            status=status,
            limit=limit + 1,
            before=decode_cursor(cursor),
        )
        items = [
            MyJoinOut(
                id=view.join.id,
                pool_id=view.pool.id,
                quantity=view.join.quantity,
                held_minor=held_now(view.join),
                status=JoinStatus(view.join.status).value,
                charged_minor=view.join.charged_minor,
                created_at=view.join.created_at,
                pool_title=view.pool.title,
                pool_status=PoolStatus(view.pool.status).value,
                currency=view.pool.currency,
                unit_price_minor=view.pool.final_unit_price_minor
                or pricing.unit_price(service.tiers_of(view.pool), view.pool.committed_quantity),
            )
            for view in views[:limit]
        ]
        return Page(items=items, next_cursor=next_cursor(views, limit, lambda v: v.join.row_id))
