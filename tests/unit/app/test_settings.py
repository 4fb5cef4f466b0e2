"""Settings are read once, typed, and a bad value is one clear line."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings

KEY = "k" * 40


def test_plain_postgresql_url_means_asyncpg() -> None:
    s = load_settings({"COPOOL_DATABASE_URL": "postgresql://u@h:5432/db", "COPOOL_SECRET_KEY": KEY})
    assert s.database_url == "postgresql+asyncpg://u@h:5432/db"


def test_defaults_are_embedded_sqlite_and_local_redis() -> None:
    s = load_settings({"COPOOL_SECRET_KEY": KEY})
    assert s.database_url.startswith("sqlite+aiosqlite:///")
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert not s.redis_url_explicit


def test_prod_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(SettingsError, match="COPOOL_SECRET_KEY is required"):
        load_settings({"COPOOL_ENV": "prod"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COPOOL_DATABASE_URL": "mysql://x/y"}, "COPOOL_DATABASE_URL"),
        ({"COPOOL_DATABASE_URL": "::::"}, "COPOOL_DATABASE_URL"),
        ({"COPOOL_REDIS_URL": "http://x"}, "COPOOL_REDIS_URL"),
        ({"COPOOL_ENV": "staging"}, "COPOOL_ENV"),
        ({"COPOOL_TOKEN_TTL_S": "soon"}, "COPOOL_TOKEN_TTL_S"),
        ({"COPOOL_SECRET_KEY": "short"}, "COPOOL_SECRET_KEY"),
        ({"COPOOL_DEFAULT_CURRENCY": "XAU"}, "COPOOL_DEFAULT_CURRENCY"),
        ({"COPOOL_DEFAULT_CURRENCY": "ABC"}, "COPOOL_DEFAULT_CURRENCY"),
        ({"COPOOL_DEFAULT_CURRENCY": "cny"}, "COPOOL_DEFAULT_CURRENCY"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"COPOOL_SECRET_KEY": KEY, **env})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_default_currency_is_cny_and_any_active_iso_code_may_replace_it() -> None:
    assert load_settings({"COPOOL_SECRET_KEY": KEY}).default_currency == "CNY"
    jpy = load_settings({"COPOOL_SECRET_KEY": KEY, "COPOOL_DEFAULT_CURRENCY": "JPY"})
    assert jpy.default_currency == "JPY"
