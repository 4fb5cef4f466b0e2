"""A client generated from /schema/openapi.json, with no warnings, runs the README flow.

This is what the mobile team does with the document: if the generator has to skip an answer or a
parameter, the document is not good enough.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, make_settings
from tests.support.live_server import live_server

PACKAGE = "copool_client"
GENERATOR_CONFIG = (
    f'{{"post_hooks": [], "project_name_override": "{PACKAGE}", '
    f'"package_name_override": "{PACKAGE}"}}'
)


@pytest.fixture
def base_url(postgres_url: str, redis_url: str) -> Iterator[str]:
    with live_server(make_settings(postgres_url, redis_url)) as url:
        yield url


def _generator() -> str:
    beside_python = Path(sys.executable).parent / "openapi-python-client"
    found = str(beside_python) if beside_python.exists() else shutil.which("openapi-python-client")
    assert found, "openapi-python-client is not installed (pip install -e '.[dev]')"
    return found


@pytest.fixture
def client_package(base_url: str, tmp_path: Path) -> Iterator[Any]:
    """Generate the client from the live document and import it; unload it afterwards."""
    schema = tmp_path / "openapi.json"
    schema.write_bytes(httpx.get(f"{base_url}/schema/openapi.json").content)
    config = tmp_path / "generator.json"
    config.write_text(GENERATOR_CONFIG)
    out = tmp_path / "client"
    command = [_generator(), "generate", "--path", str(schema), "--config", str(config)]
    command += ["--meta", "none", "--output-path", str(out / PACKAGE), "--fail-on-warning"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_the_readme_flow_runs_through_the_generated_client(
    client_package: Any, base_url: str
) -> None:
    api = importlib.import_module(f"{PACKAGE}.api")
    register = importlib.import_module(f"{PACKAGE}.api.accounts.v1_auth_register_register")
    top_up = importlib.import_module(f"{PACKAGE}.api.wallet.v1_wallet_top_ups_top_up")
    statement = importlib.import_module(f"{PACKAGE}.api.wallet.v1_wallet_transactions_transactions")
    wallet = importlib.import_module(f"{PACKAGE}.api.wallet.v1_wallet_wallet")
    models = importlib.import_module(f"{PACKAGE}.models")
    assert api is not None

    anonymous = client_package.Client(base_url=base_url)
    signed_up = register.sync(
        client=anonymous,
        body=models.RegisterIn(
            email=f"client-{uuid.uuid4().hex[:12]}@example.com",
            password=PASSWORD,
            display_name="Generated",
        ),
    )
    assert isinstance(signed_up, models.RegisterOut), signed_up
    me = client_package.AuthenticatedClient(base_url=base_url, token=signed_up.token)

    body = models.FundingIn(amount_minor=8_800, currency="CNY")
    key = str(uuid.uuid4())
    first = top_up.sync_detailed(client=me, body=body, idempotency_key=key)
    replay = top_up.sync_detailed(client=me, body=body, idempotency_key=key)
    assert first.status_code == replay.status_code == 201, first.content
    assert isinstance(first.parsed, models.TransferOut)
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"

    other = top_up.sync_detailed(
        client=me, body=models.FundingIn(amount_minor=1, currency="CNY"), idempotency_key=key
    )
    assert other.status_code == 409
    assert isinstance(other.parsed, models.ProblemDetail)
    assert other.parsed.type_ == "idempotency-key-reused"

    page = statement.sync(client=me)
    assert isinstance(page, models.PageTransferOut), page
    assert [line.id for line in page.items] == [first.parsed.id]
    balance = wallet.sync(client=me, currency="CNY")
    assert isinstance(balance, models.WalletOut), balance
    assert balance.balance_minor == 8_800

    invalid = top_up.sync_detailed(
        client=me, body=models.FundingIn(amount_minor=1, currency="XAU"), idempotency_key="k:1"
    )
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.ValidationProblem)
    assert invalid.parsed.type_ == "unknown-currency"
