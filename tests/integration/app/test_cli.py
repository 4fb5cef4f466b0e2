"""The `copool` command as an operator meets it: a real process, real settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.support.ledger import COPOOL
from tests.support.services import sqlite_url


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COPOOL, *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["worker"],
        ["migrate"],
        ["admin", "create-user"],
        ["admin", "grant-role"],
        ["admin", "revoke-role"],
        ["admin", "ban"],
        ["admin", "unban"],
        ["admin", "deactivate"],
    ],
)
def test_every_command_explains_itself(command: list[str], tmp_path: Path) -> None:
    result = run([*command, "--help"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: copool" in result.stdout


def test_migrate_then_create_an_admin(tmp_path: Path) -> None:
    env = {"COPOOL_DATABASE_URL": sqlite_url(str(tmp_path)), "COPOOL_SECRET_KEY": TEST_SECRET}
    migrated = run(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision" in migrated.stdout
    args = ["admin", "create-user", "--email", "ops@example.com", "--password", "opspassword1"]
    created = run([*args, "--role", "admin"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    assert "roles member,admin" in created.stdout
    again = run(args, env, tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    too_long = ["admin", "create-user", "--email", "\u0130" * 125 + "@x.io", "--password", "p" * 12]
    refused = run(too_long, env, tmp_path)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "lower-cased" in refused.stderr


def test_a_bad_setting_stops_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = run(["migrate"], {"COPOOL_DATABASE_URL": "mysql://nope/db"}, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "COPOOL_DATABASE_URL" in result.stderr


def test_an_operator_grants_bans_unbans_and_deactivates_by_email(
    tmp_path: Path, redis_url: str
) -> None:
    env = {
        "COPOOL_DATABASE_URL": sqlite_url(str(tmp_path)),
        "COPOOL_SECRET_KEY": TEST_SECRET,
        "COPOOL_REDIS_URL": redis_url,
    }
    assert run(["migrate"], env, tmp_path).returncode == 0
    email = "rider@example.com"
    created = run(
        ["admin", "create-user", "--email", email, "--password", "riderpass1", "--role", "member"],
        env,
        tmp_path,
    )
    assert created.returncode == 0, created.stderr

    granted = run(["admin", "grant-role", email.upper(), "driver"], env, tmp_path)
    assert granted.returncode == 0, granted.stderr
    assert "roles member,driver" in granted.stdout
    revoked = run(["admin", "revoke-role", email, "driver"], env, tmp_path)
    assert "roles member" in revoked.stdout
    banned = run(["admin", "ban", email, "--reason", "payment fraud"], env, tmp_path)
    assert banned.returncode == 0, banned.stderr
    assert "banned rider@example.com: payment fraud" in banned.stdout
    assert run(["admin", "unban", email], env, tmp_path).returncode == 0
    assert run(["admin", "deactivate", email], env, tmp_path).returncode == 0

    unknown = run(["admin", "ban", "nobody@example.com", "--reason", "x"], env, tmp_path)
    assert unknown.returncode == 1
    assert "no user with email nobody@example.com" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    member = run(["admin", "revoke-role", email, "member"], env, tmp_path)
    assert member.returncode == 1
    assert "member role" in member.stderr
