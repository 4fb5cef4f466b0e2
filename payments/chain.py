"""The tamper-evident record: entry n's hash is sha256(hash(n-1) || canonical bytes of n)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec

GENESIS_HASH = "0" * 64


class ChainEntry(msgspec.Struct, array_like=True, frozen=True):
    """What the chain commits to, in a fixed order; every field survives a database round trip."""

    seq: int
    id: str
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency: str
    kind: str
    ref: str
    status: str
    parent_id: str | None
    created_at_us: int


_encoder = msgspec.msgpack.Encoder()


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch: the precision both databases keep exactly."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def canonical_bytes(entry: ChainEntry) -> bytes:
    return _encoder.encode(entry)


def entry_hash(previous_hash: str, entry: ChainEntry) -> str:
    return hashlib.sha256(bytes.fromhex(previous_hash) + canonical_bytes(entry)).hexdigest()


def first_broken_link(
    entries: list[tuple[ChainEntry, str]], previous_hash: str = GENESIS_HASH, first_seq: int = 1
) -> tuple[int, str] | None:
    """Walk (entry, stored hash) pairs in order; return (seq, reason) of the first bad one."""
    expected_seq = first_seq
    for entry, stored in entries:
        if entry.seq != expected_seq:
            return entry.seq, f"sequence gap: expected {expected_seq}"
        computed = entry_hash(previous_hash, entry)
        if computed != stored:
            return entry.seq, f"hash mismatch: stored {stored[:12]}..., computed {computed[:12]}..."
        previous_hash = stored
        expected_seq += 1
    return None
