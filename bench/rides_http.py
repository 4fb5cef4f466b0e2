"""Carpool matching through HTTP: prints figures; run on demand, never in tests.

`copool serve --workers 2` and one `copool worker` on a throw-away PostgreSQL database and Redis
(db COPOOL_BENCH_RIDES_REDIS_URL, flushed). A seeded synthetic commute in Shanghai
(matching.synthetic.city_batch: towards a few hubs): OFFERS insured drivers post one-seat offers,
then RIDERS riders post their requests at once (a burst over HTTP). The server enqueues a matching
run at the end of the window (COPOOL_RIDE_MATCH_WINDOW_S); the benchmark polls the database until
the proposals stop changing (at most 60 s) and prints:

- riders proposed a ride, against the maximum matching bound (every feasible pair considered,
  computed here from the same offers and requests with matching.matching_bound);
- seconds from the burst's last answer to the last proposal;
- proposals that break a limit (seats, the rider's window, the driver's detour): must be none;
- the burst's HTTP latency (p50 / p99).

Everything made is thrown away afterwards (servers stopped, database dropped, Redis db flushed).
Environment: COPOOL_BENCH_POSTGRES_DSN, COPOOL_BENCH_RIDES_REDIS_URL (default
redis://127.0.0.1:6379/6), COPOOL_BENCH_OFFERS / COPOOL_BENCH_RIDERS (default 150 each),
COPOOL_BENCH_SEED (default 7).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.http import free_port
from bench.pool_join import logged_server, postgres_database, server_env
from matching.assignment import matching_bound
from matching.feasibility import Rider, Trip
from matching.synthetic import city_batch

REDIS_URL = os.environ.get("COPOOL_BENCH_RIDES_REDIS_URL", "redis://127.0.0.1:6379/6")
OFFERS = int(os.environ.get("COPOOL_BENCH_OFFERS", "150"))
RIDERS = int(os.environ.get("COPOOL_BENCH_RIDERS", "150"))
SEED = int(os.environ.get("COPOOL_BENCH_SEED", "7"))
DEADLINE_S = 60.0
#: Offers and windows start this long after the benchmark begins (all in the future).
LEAD = timedelta(hours=1)
PRICE_PER_KM_MINOR = 150
RIDER_FUNDS_MINOR = 1_000_000


def flush_redis() -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
        client.flushdb()


async def people(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Insured drivers and funded riders, inserted directly: their bearer tokens."""
    from sqlalchemy import update

    from app.accounts.models import User
    from app.db import create_engine, create_sessionmaker
    from app.settings import load_settings
    from app.uow import UnitOfWork
    from tests.support.crowd import funded_members
    from trust import insurance

    settings = load_settings(env)
    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        drivers = await funded_members(
            sessionmaker, settings, count=OFFERS, amount_minor=1, now=now
        )
        riders = await funded_members(
            sessionmaker, settings, count=RIDERS, amount_minor=RIDER_FUNDS_MINOR, now=now
        )
        for user_id, _ in drivers:
            policy = await insurance.submit_policy(
                UnitOfWork(sessionmaker),
                user_id=user_id,
                provider="PICC",
                policy_number=f"B-{user_id.hex[:8]}",
                expires_at=now + timedelta(days=365),
                now=now,
            )
            async with UnitOfWork(sessionmaker) as uow:
                await insurance.verify_policy(
                    uow.session, policy_id=policy.id, admin_id=None, actor="bench", now=now
                )
                await uow.session.execute(
                    update(User).where(User.id == user_id).values(roles="member,driver")
                )
                await uow.commit()
    finally:
        await engine.dispose()
    token = lambda h: h["Authorization"].removeprefix("Bearer ")  # noqa: E731
    return [token(h) for _, h in drivers], [token(h) for _, h in riders]


def at(base: datetime, seconds: float) -> str:
    return (base + timedelta(seconds=seconds)).isoformat()


def offer_body(trip: Trip, base: datetime) -> dict[str, Any]:
    return {
        "origin": {"lat": trip.origin.lat, "lon": trip.origin.lon},
        "destination": {"lat": trip.destination.lat, "lon": trip.destination.lon},
        "departure_at": at(base, trip.departure_s),
        "seats": trip.seats,
        "price_per_km_minor": PRICE_PER_KM_MINOR,
        "currency": "CNY",
        "max_detour_km": round(trip.max_detour_km, 3),
    }


def request_body(rider: Rider, base: datetime) -> dict[str, Any]:
    return {
        "origin": {"lat": rider.pickup.lat, "lon": rider.pickup.lon},
        "destination": {"lat": rider.dropoff.lat, "lon": rider.dropoff.lon},
        "earliest_departure": at(base, rider.earliest_pickup_s),
        "latest_departure": at(base, rider.latest_pickup_s),
        "seats": rider.seats,
    }


async def post_all(
    base_url: str, path: str, bodies: list[dict[str, Any]], tokens: list[str]
) -> list[float]:
    """POST every body at once (its own token each); the latencies (ms) of the 201s."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(body: dict[str, Any], token: str) -> float:
            began = time.perf_counter()
            answer = await client.post(
                path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if answer.status_code != 201:
                raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
            return (time.perf_counter() - began) * 1000

        return list(await asyncio.gather(*(one(b, t) for b, t in zip(bodies, tokens, strict=True))))


async def proposals(dsn: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT m.seats, m.pickup_eta, m.detour_km, o.max_detour_km, o.seats AS offer_seats,"
            " r.earliest_departure, r.latest_departure, m.offer_id"
            " FROM ride_matches m JOIN ride_offers o ON o.id = m.offer_id"
            " JOIN ride_requests r ON r.id = m.request_id WHERE m.status = 'proposed'"
        )
        return [dict(row) for row in rows]
    finally:
        await conn.close()


def broken(rows: list[dict[str, Any]]) -> int:
    """Proposals that break a limit (a few ms of rounding slack on times)."""
    slack = timedelta(milliseconds=5)
    per_offer: dict[uuid.UUID, int] = {}
    bad = 0
    for row in rows:
        per_offer[row["offer_id"]] = per_offer.get(row["offer_id"], 0) + row["seats"]
        if (
            not row["earliest_departure"] - slack
            <= row["pickup_eta"]
            <= (row["latest_departure"] + slack)
        ) or row["detour_km"] > row["max_detour_km"] + 1e-6:
            bad += 1
    offer_seats = {row["offer_id"]: row["offer_seats"] for row in rows}
    return bad + sum(1 for offer, used in per_offer.items() if used > offer_seats[offer])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    from app.settings import load_settings
    from rides.config import ride_config

    rng = np.random.default_rng(SEED)
    batch = city_batch(rng, trips=OFFERS, riders=RIDERS, seats=(1, 1))
    # Shift the batch so that nothing starts before the lead: every offer departs later than now.
    shift = -min(
        min(t.departure_s for t in batch.trips), min(r.earliest_pickup_s for r in batch.riders)
    )
    print(
        f"rides over HTTP: {OFFERS} one-seat offers, then a burst of {RIDERS} requests (seed "
        f"{SEED}); copool serve --workers 2 + copool worker on PostgreSQL, on {os.cpu_count()} "
        f"cores shared with the load"
    )
    flush_redis()
    workdir = Path(tempfile.mkdtemp(prefix="copool-bench-rides-"))
    try:
        with postgres_database() as (dsn, url):
            env = server_env(url)
            env["COPOOL_REDIS_URL"] = REDIS_URL
            config = ride_config(load_settings(env))
            trips = [
                Trip(**{**_fields(t), "departure_s": t.departure_s + shift}) for t in batch.trips
            ]
            riders = [
                Rider(
                    pickup=r.pickup,
                    dropoff=r.dropoff,
                    seats=r.seats,
                    earliest_pickup_s=r.earliest_pickup_s + shift,
                    latest_pickup_s=r.latest_pickup_s + shift,
                )
                for r in batch.riders
            ]
            bound = matching_bound(
                trips,
                riders,
                router=config.router,
                limits=config.limits,
                resolution=config.h3_resolution,
                max_new_riders_per_trip=1,
            )
            drivers, riders_tokens = asyncio.run(people(env))
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            copool = str(Path(sys.executable).with_name("copool"))
            serve = [copool, "serve", "--workers", "2", "--port", str(port)]
            with (
                logged_server(serve, env, base_url + "/v1/health", workdir / "serve.log"),
                logged_server(
                    [copool, "worker"], env, base_url + "/v1/health", workdir / "worker.log"
                ),
            ):
                base = datetime.now(UTC) + LEAD
                asyncio.run(
                    post_all(
                        base_url,
                        "/v1/rides/offers",
                        [offer_body(t, base) for t in trips],
                        drivers,
                    )
                )
                asyncio.run(asyncio.sleep(config.match_window_s + 1))  # offers' own runs pass
                latencies = asyncio.run(
                    post_all(
                        base_url,
                        "/v1/rides/requests",
                        [request_body(r, base) for r in riders],
                        riders_tokens,
                    )
                )
                burst_end = time.monotonic()
                last_change, seen = burst_end, -1
                rows: list[dict[str, Any]] = []
                while time.monotonic() - burst_end < DEADLINE_S:
                    rows = asyncio.run(proposals(dsn))
                    if len(rows) != seen:
                        seen, last_change = len(rows), time.monotonic()
                    elif seen >= bound or time.monotonic() - last_change > 10:
                        break
                    time.sleep(0.25)
        share = len(rows) / bound if bound else float("nan")
        print(f"  maximum matching bound (every feasible pair): {bound} riders")
        print(
            f"  riders proposed a ride: {len(rows)} = {share:.3f} of the bound "
            f"(target >= 0.95), the last {last_change - burst_end:.1f} s after the burst"
        )
        print(f"  proposals breaking seats, window or detour: {broken(rows)} (target 0)")
        print(
            f"  the burst of {RIDERS} requests: p50 {percentile(latencies, 0.5):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms"
        )
    finally:
        flush_redis()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _fields(trip: Trip) -> dict[str, Any]:
    return {name: getattr(trip, name) for name in trip.__struct_fields__}


if __name__ == "__main__":
    main()
