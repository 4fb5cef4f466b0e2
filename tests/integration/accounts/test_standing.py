"""Roles, bans and deactivation take effect on the next request, in every process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient
from sqlalchemy import event

from app.accounts import service
from app.accounts.models import Role
from app.auth import Principal, announce_auth_change, auth_states_loader, require_role
from app.db import SessionMaker, create_read_sessionmaker
from app.main import create_app, create_redis
from app.settings import Settings
from app.uow import UnitOfWork
from tests.conftest import PASSWORD, make_settings
from tests.support.users import app_notifier, assert_problem, sign_up, unique_email


@get("/v1/test/organizers-only", guards=[require_role(Role.ORGANIZER)], sync_to_thread=False)
def organizers_only(principal: NamedDependency[Principal]) -> dict[str, list[str]]:
    return {"roles": sorted(r.value for r in principal.roles)}


def app_with_guarded_route(settings: Settings) -> Litestar:
    app = create_app(settings)
    app.register(organizers_only)
    return app


@pytest.fixture
def long_ttl_settings(database_url: str, redis_url: str) -> Settings:
    """A TTL far beyond the test: whatever takes effect does so by invalidation, not expiry."""
    return make_settings(database_url, redis_url, auth_cache_ttl_s=300)


@pytest.fixture
async def guarded(long_ttl_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=app_with_guarded_route(long_ttl_settings)) as client:
        yield client


async def test_a_granted_role_counts_on_the_next_request_with_the_same_token(
    guarded: AsyncTestClient[Any], sessionmaker: SessionMaker
) -> None:
    user_id, headers = await sign_up(guarded)
    before = await guarded.get("/v1/test/organizers-only", headers=headers)
    assert_problem(before, 403, "forbidden")

    uow = UnitOfWork(sessionmaker)
    uid = uuid.UUID(user_id)
    notify = app_notifier(guarded)
    user = await service.grant_role(uow, user_id=uid, role=Role.ORGANIZER, notify=notify)
    assert user.roles == "member,organizer"
    assert user.auth_version == 1
    after = await guarded.get("/v1/test/organizers-only", headers=headers)
    assert after.status_code == 200
    assert after.json() == {"roles": ["member", "organizer"]}

    await service.revoke_role(uow, user_id=uid, role=Role.ORGANIZER, notify=notify)
    revoked = await guarded.get("/v1/test/organizers-only", headers=headers)
    assert_problem(revoked, 403, "forbidden")


async def test_a_ban_refuses_the_next_request_and_login_until_lifted(
    guarded: AsyncTestClient[Any], sessionmaker: SessionMaker
) -> None:
    email = unique_email()
    user_id, headers = await sign_up(guarded, email=email)
    assert (await guarded.get("/v1/me", headers=headers)).status_code == 200

    uow, uid, notify = UnitOfWork(sessionmaker), uuid.UUID(user_id), app_notifier(guarded)
    banned = await service.ban_user(
        uow, user_id=uid, reason="fraud", now=datetime.now(UTC), notify=notify
    )
    assert banned.banned_at is not None
    assert banned.ban_reason == "fraud"
    assert_problem(await guarded.get("/v1/me", headers=headers), 403, "banned")
    login = await guarded.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(login, 403, "banned")

    await service.unban_user(uow, user_id=uid, notify=notify)
    assert (await guarded.get("/v1/me", headers=headers)).status_code == 200
    login = await guarded.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200


async def test_a_deactivated_account_token_and_password_are_401(
    guarded: AsyncTestClient[Any], sessionmaker: SessionMaker
) -> None:
    email = unique_email()
    user_id, headers = await sign_up(guarded, email=email)
    await service.deactivate_user(
        UnitOfWork(sessionmaker),
        user_id=uuid.UUID(user_id),
        now=datetime.now(UTC),
        notify=app_notifier(guarded),
    )
    assert_problem(await guarded.get("/v1/me", headers=headers), 401, "unauthorized")
    login = await guarded.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(login, 401, "invalid-credentials")


async def test_a_valid_token_of_a_user_that_does_not_exist_is_401(
    guarded: AsyncTestClient[Any],
) -> None:
    jwt_auth = guarded.app.state.jwt_auth
    token = jwt_auth.create_token(identifier=str(uuid.uuid4()), token_extras={"roles": ["admin"]})
    response = await guarded.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "unauthorized")


async def test_a_cached_caller_is_authenticated_without_a_database_query(
    guarded: AsyncTestClient[Any],
) -> None:
    _, headers = await sign_up(guarded, roles=["organizer"])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = guarded.app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            response = await guarded.get("/v1/test/organizers-only", headers=headers)
            assert response.status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # The first request loads the auth state once; the next ones are answered from the cache.
    assert len([s for s in statements if "users" in s]) <= 1


async def test_a_change_announced_elsewhere_reaches_every_process(
    long_ttl_settings: Settings, sessionmaker: SessionMaker
) -> None:
    async with (
        AsyncTestClient(app=app_with_guarded_route(long_ttl_settings)) as first,
        AsyncTestClient(app=app_with_guarded_route(long_ttl_settings)) as second,
    ):
        user_id, headers = await sign_up(first)
        uid = uuid.UUID(user_id)
        await asyncio.sleep(0.2)  # both processes are listening
        for client in (first, second):  # warm both caches
            assert (await client.get("/v1/me", headers=headers)).status_code == 200

        # What the CLI does: change the row, then announce it over a Redis connection of its
        # own (the apps' clients live on their test clients' loops).
        redis = create_redis(long_ttl_settings.redis_url)
        try:

            async def announce(changed: uuid.UUID) -> None:
                await announce_auth_change(redis, changed)

            await service.ban_user(
                UnitOfWork(sessionmaker),
                user_id=uid,
                reason="spam",
                now=datetime.now(UTC),
                notify=announce,
            )
            for client in (first, second):
                for _ in range(50):
                    response = await client.get("/v1/me", headers=headers)
                    if response.status_code == 403:
                        break
                    await asyncio.sleep(0.02)
                assert_problem(response, 403, "banned")
        finally:
            await redis.aclose()


async def test_without_announcements_a_change_still_lands_within_the_ttl(
    database_url: str, redis_url: str, sessionmaker: SessionMaker
) -> None:
    settings = make_settings(database_url, redis_url, auth_cache_ttl_s=1)
    async with AsyncTestClient(app=create_app(settings)) as client:
        user_id, headers = await sign_up(client)
        assert (await client.get("/v1/me", headers=headers)).status_code == 200

        async def silent(_: uuid.UUID) -> None:
            return None

        await service.ban_user(
            UnitOfWork(sessionmaker),
            user_id=uuid.UUID(user_id),
            reason="spam",
            now=datetime.now(UTC),
            notify=silent,
        )
        await asyncio.sleep(1.1)
        assert_problem(await client.get("/v1/me", headers=headers), 403, "banned")


async def test_member_cannot_be_revoked_and_unknown_users_are_not_found(
    sessionmaker: SessionMaker,
) -> None:
    from app.accounts.errors import MemberRoleRequired, UserNotFound

    async def silent(_: uuid.UUID) -> None:
        return None

    uow = UnitOfWork(sessionmaker)
    with pytest.raises(MemberRoleRequired):
        await service.revoke_role(uow, user_id=uuid.uuid4(), role=Role.MEMBER, notify=silent)
    with pytest.raises(UserNotFound):
        await service.grant_role(uow, user_id=uuid.uuid4(), role=Role.DRIVER, notify=silent)


async def test_concurrent_grants_both_land(
    client: AsyncTestClient[Any], sessionmaker: SessionMaker
) -> None:
    user_id, _ = await sign_up(client)
    uid = uuid.UUID(user_id)

    async def silent(_: uuid.UUID) -> None:
        return None

    await asyncio.gather(
        service.grant_role(UnitOfWork(sessionmaker), user_id=uid, role=Role.DRIVER, notify=silent),
        service.grant_role(
            UnitOfWork(sessionmaker), user_id=uid, role=Role.ORGANIZER, notify=silent
        ),
    )
    async with sessionmaker() as session:
        user = await service.get_user(session, uid)
    assert user is not None
    assert user.roles == "member,organizer,driver"
    assert user.auth_version == 2


async def test_the_auth_cache_reads_the_roles_and_standing_of_several_users(
    client: AsyncTestClient[Any], sessionmaker: SessionMaker
) -> None:
    driver, banned = [uuid.UUID((await sign_up(client))[0]) for _ in range(2)]

    async def silent(_: uuid.UUID) -> None:
        return None

    await service.grant_role(
        UnitOfWork(sessionmaker), user_id=driver, role=Role.DRIVER, notify=silent
    )
    await service.ban_user(
        UnitOfWork(sessionmaker),
        user_id=banned,
        reason="spam",
        now=datetime.now(UTC),
        notify=silent,
    )
    ghost = uuid.uuid4()
    async with sessionmaker() as session:
        states = await service.load_auth_states(session, [driver, banned, ghost])
        assert set(states) == {driver, banned}  # an absent user is left out
        assert states[driver].roles == {Role.MEMBER, Role.DRIVER}
        assert not states[driver].banned
        assert states[banned].banned
        assert not states[banned].deactivated
        with pytest.raises(ValueError, match="at most"):
            await service.load_auth_states(
                session, [uuid.uuid4() for _ in range(service.AUTH_STATES_MAX_USERS + 1)]
            )
    # What the app reads with: a read session (on PostgreSQL, a connection borrowed for the
    # statement alone).
    load_many = auth_states_loader(create_read_sessionmaker(sessionmaker.kw["bind"]))
    assert await load_many([driver, ghost]) == {driver: states[driver]}
