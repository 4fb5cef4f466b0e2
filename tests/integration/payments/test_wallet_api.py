"""Wallet and ledger over HTTP, on SQLite and PostgreSQL, with real Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar.testing import AsyncTestClient

from tests.support.users import assert_problem, sign_up


async def top_up(
    client: AsyncTestClient[Any], headers: dict[str, str], amount: int, key: str | None = None
) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return await client.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": amount, "currency": "CNY"},
        headers={**headers, **extra},
    )


async def test_a_top_up_credits_the_wallet_and_lands_in_the_chain(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    response = await top_up(client, auth, 5_000)
    assert response.status_code == 201, response.text
    transfer = response.json()
    assert (transfer["kind"], transfer["amount_minor"], transfer["status"]) == (
        "top_up",
        5_000,
        "posted",
    )

    wallet = (await client.get("/v1/wallet", headers=auth)).json()
    assert wallet == {
        "currency": "CNY",
        "available_minor": 5_000,
        "held_minor": 0,
        "balance_minor": 5_000,
    }
    me = (await client.get("/v1/me", headers=auth)).json()
    assert me["wallet"]["available_minor"] == 5_000

    # A GET never writes: the app's chain writer chains the entry within moments.
    for _ in range(100):
        page = (await client.get("/v1/wallet/transactions", headers=auth)).json()
        [line] = page["items"]
        if line["seq"] is not None:
            break
        await asyncio.sleep(0.05)
    assert line["id"] == transfer["id"]
    assert line["direction"] == "credit"
    assert isinstance(line["seq"], int)
    assert len(line["hash"]) == 64
    head = (await client.get("/v1/ledger/head", headers=auth)).json()
    assert head["seq"] >= line["seq"]


async def test_a_replayed_top_up_answers_the_same_bytes_and_moves_money_once(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    key = str(uuid.uuid4())
    first = await top_up(client, auth, 1_234, key)
    second = await top_up(client, auth, 1_234, key)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second.headers["idempotent-replayed"] == "true"
    wallet = (await client.get("/v1/wallet", headers=auth)).json()
    assert wallet["balance_minor"] == 1_234

    other_body = await top_up(client, auth, 999, key)
    assert_problem(other_body, 409, "idempotency-key-reused")
    assert (await client.get("/v1/wallet", headers=auth)).json()["balance_minor"] == 1_234


async def test_idempotency_keys_belong_to_their_caller(client: AsyncTestClient[Any]) -> None:
    _, alice = await sign_up(client)
    _, bob = await sign_up(client)
    key = str(uuid.uuid4())
    assert (await top_up(client, alice, 100, key)).status_code == 201
    assert (await top_up(client, bob, 100, key)).status_code == 201
    for auth in (alice, bob):
        assert (await client.get("/v1/wallet", headers=auth)).json()["balance_minor"] == 100


async def test_concurrent_duplicates_move_money_once(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(top_up(client, auth, 700, key) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["type"] == "idempotency-request-in-progress"
    assert (await client.get("/v1/wallet", headers=auth)).json()["balance_minor"] == 700


async def test_a_declined_card_is_402_and_moves_nothing(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    assert_problem(await top_up(client, auth, 10_002), 402, "payment-declined")
    assert (await client.get("/v1/wallet", headers=auth)).json()["balance_minor"] == 0


async def test_withdrawing_more_than_available_is_402_insufficient_funds(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    await top_up(client, auth, 500)
    too_much = await client.post(
        "/v1/wallet/withdrawals", json={"amount_minor": 501, "currency": "CNY"}, headers=auth
    )
    assert_problem(too_much, 402, "insufficient-funds")
    ok = await client.post(
        "/v1/wallet/withdrawals", json={"amount_minor": 200, "currency": "CNY"}, headers=auth
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["status"] == "posted"
    wallet = (await client.get("/v1/wallet", headers=auth)).json()
    assert (wallet["balance_minor"], wallet["held_minor"]) == (300, 0)


async def test_bad_money_input_is_422(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    unknown = await client.post(
        "/v1/wallet/top-ups", json={"amount_minor": 100, "currency": "XXX"}, headers=auth
    )
    assert_problem(unknown, 422, "unknown-currency")
    for body in (
        {"amount_minor": 100, "currency": "eur"},
        {"amount_minor": 0, "currency": "CNY"},
        {"amount_minor": 1.5, "currency": "CNY"},
    ):
        response = await client.post("/v1/wallet/top-ups", json=body, headers=auth)
        assert_problem(response, 422, "validation-error")
    assert_problem(
        await client.get("/v1/wallet?currency=XXX", headers=auth), 422, "unknown-currency"
    )
    bad_key = await client.post(
        "/v1/wallet/top-ups",
        json={"amount_minor": 100, "currency": "CNY"},
        headers={**auth, "Idempotency-Key": "spaces are not allowed"},
    )
    assert_problem(bad_key, 422, "validation-error")


async def test_the_wallet_needs_a_token(client: AsyncTestClient[Any]) -> None:
    assert_problem(await client.get("/v1/wallet"), 401, "unauthorized")
    assert_problem(
        await client.post("/v1/wallet/top-ups", json={"amount_minor": 1, "currency": "CNY"}),
        401,
        "unauthorized",
    )


async def test_the_statement_pages_by_cursor_without_gaps_or_repeats(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    for amount in range(101, 126):
        assert (await top_up(client, auth, amount)).status_code == 201
    seen: list[int] = []
    cursor = None
    sizes = []
    while True:
        url = "/v1/wallet/transactions?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=auth)).json()
        sizes.append(len(page["items"]))
        seen += [item["amount_minor"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert seen == list(range(125, 100, -1))  # newest first
    assert_problem(
        await client.get("/v1/wallet/transactions?cursor=garbage", headers=auth),
        422,
        "validation-error",
    )
    assert_problem(
        await client.get("/v1/wallet/transactions?limit=101", headers=auth),
        422,
        "validation-error",
    )


async def test_a_declined_withdrawal_releases_its_hold(client: AsyncTestClient[Any]) -> None:
    _, auth = await sign_up(client)
    await top_up(client, auth, 50_000)
    declined = await client.post(
        "/v1/wallet/withdrawals", json={"amount_minor": 20_002, "currency": "CNY"}, headers=auth
    )
    assert_problem(declined, 402, "payment-declined")
    wallet = (await client.get("/v1/wallet", headers=auth)).json()
    assert (wallet["available_minor"], wallet["held_minor"]) == (50_000, 0)
    kinds = [
        i["kind"]
        for i in (await client.get("/v1/wallet/transactions", headers=auth)).json()["items"]
    ]
    assert kinds == ["void", "withdrawal", "top_up"]


async def test_the_statement_tells_holds_from_what_moved_money_and_sums_to_the_balance(
    client: AsyncTestClient[Any],
) -> None:
    _, auth = await sign_up(client)
    await top_up(client, auth, 50_000)
    posted = await client.post(
        "/v1/wallet/withdrawals", json={"amount_minor": 3_000, "currency": "CNY"}, headers=auth
    )
    assert posted.status_code == 201, posted.text
    declined = await client.post(
        "/v1/wallet/withdrawals", json={"amount_minor": 20_002, "currency": "CNY"}, headers=auth
    )
    assert_problem(declined, 402, "payment-declined")
    items = (await client.get("/v1/wallet/transactions", headers=auth)).json()["items"]
    assert [(i["kind"], i["status"], i["is_hold"]) for i in items] == [
        ("void", "voided", False),
        ("withdrawal", "voided", True),
        ("capture", "posted", False),
        ("withdrawal", "posted", True),
        ("top_up", "posted", False),
    ]
    moved = sum(
        i["amount_minor"] * (1 if i["direction"] == "credit" else -1)
        for i in items
        if not i["is_hold"] and i["status"] == "posted"
    )
    assert moved == (await client.get("/v1/wallet", headers=auth)).json()["balance_minor"] == 47_000
    assert posted.json()["is_hold"] is True  # the withdrawal itself: held, then captured
