"""Auth settings: proxies to trust, the auth cache TTL, the per-email login cap."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings

KEY = "k" * 40


def test_by_default_no_proxy_is_trusted_and_auth_state_is_cached_briefly() -> None:
    s = load_settings({"COPOOL_SECRET_KEY": KEY})
    assert s.trusted_proxies == ()
    assert 0 < s.auth_cache_ttl_s <= 10
    assert s.login_limit_per_email < s.login_limit_per_email_total == 100


def test_trusted_proxies_take_addresses_and_networks_of_both_families() -> None:
    s = load_settings(
        {"COPOOL_SECRET_KEY": KEY, "COPOOL_TRUSTED_PROXIES": " 10.0.0.1, 172.16.0.0/12 ,fd00::/8,"}
    )
    assert s.trusted_proxies == ("10.0.0.1/32", "172.16.0.0/12", "fd00::/8")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COPOOL_TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, "COPOOL_TRUSTED_PROXIES"),
        ({"COPOOL_TRUSTED_PROXIES": "10.0.0.300"}, "COPOOL_TRUSTED_PROXIES"),
        ({"COPOOL_AUTH_CACHE_TTL_S": "soon"}, "COPOOL_AUTH_CACHE_TTL_S must be an integer"),
        ({"COPOOL_AUTH_CACHE_TTL_S": "3601"}, "COPOOL_AUTH_CACHE_TTL_S must be between"),
        ({"COPOOL_LOGIN_LIMIT_PER_EMAIL_TOTAL": "0"}, "COPOOL_LOGIN_LIMIT_PER_EMAIL_TOTAL"),
    ],
)
def test_a_bad_auth_setting_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings({"COPOOL_SECRET_KEY": KEY, **env})
    assert "\n" not in str(caught.value)


def test_zero_ttl_means_every_request_reads_the_users_standing() -> None:
    assert (
        load_settings({"COPOOL_SECRET_KEY": KEY, "COPOOL_AUTH_CACHE_TTL_S": "0"}).auth_cache_ttl_s
        == 0
    )
