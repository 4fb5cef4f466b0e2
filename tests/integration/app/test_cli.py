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
    "command", [[], ["serve"], ["worker"], ["migrate"], ["admin", "create-user"]]
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


def test_a_bad_setting_stops_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = run(["migrate"], {"COPOOL_DATABASE_URL": "mysql://nope/db"}, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "COPOOL_DATABASE_URL" in result.stderr
