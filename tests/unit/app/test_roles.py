"""Role guards: the caller needs one of the roles; admin passes every check."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from app.accounts.models import Role
from app.auth import Principal, require_role


def connection_of(user: Any) -> ASGIConnection[Any, Any, Any, Any]:
    return ASGIConnection(scope={"type": "http", "user": user, "headers": []})  # type: ignore[typeddict-item]


def principal(*roles: Role) -> Principal:
    return Principal(user_id=uuid.uuid4(), roles=frozenset(roles))


async def test_a_driver_passes_the_driver_guard_and_a_member_does_not() -> None:
    guard = require_role(Role.DRIVER)
    await guard(connection_of(principal(Role.MEMBER, Role.DRIVER)), None)  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedException, match="driver"):
        await guard(connection_of(principal(Role.MEMBER)), None)  # type: ignore[arg-type]


async def test_admin_passes_every_role_check() -> None:
    await require_role(Role.ORGANIZER)(connection_of(principal(Role.ADMIN)), None)  # type: ignore[arg-type]


async def test_no_principal_is_unauthorized() -> None:
    with pytest.raises(NotAuthorizedException):
        await require_role(Role.MEMBER)(connection_of(None), None)  # type: ignore[arg-type]
