"""msgspec structs that the trust API reads and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from payments.money import MAX_AMOUNT_MINOR

SubjectTypeIn = Literal["pool", "match"]
ComplaintCategoryIn = Literal[
    "no_show", "safety", "fraud", "not_as_described", "behaviour", "other"
]
AwareDateTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a timezone")]


def _text(max_length: int, description: str) -> object:
    # Not blank, no NUL (PostgreSQL text cannot hold one); control characters are removed.
    return Meta(
        min_length=1,
        max_length=max_length,
        pattern=r"^[^\x00]*[^\x00\s][^\x00]*$",
        description=description,
    )


Comment = Annotated[str, _text(500, "plain text, at most 500 characters; shown as text")]
ComplaintText = Annotated[str, _text(2000, "what happened, at most 2000 characters")]
Reason = Annotated[str, _text(1000, "why, shown to the people concerned")]
ShortReason = Annotated[str, _text(500, "why, shown to the people concerned")]
Provider = Annotated[str, _text(100, "the insurer's name")]
PolicyNumber = Annotated[str, _text(64, "the policy number")]


class RatingIn(msgspec.Struct, forbid_unknown_fields=True):
    subject_type: SubjectTypeIn
    subject_id: UUID
    ratee_id: UUID
    stars: Annotated[int, Meta(ge=1, le=5)]
    comment: Comment | None = None


class RatingOut(msgspec.Struct):
    id: UUID
    subject_type: str
    subject_id: UUID
    rater_id: UUID
    ratee_id: UUID
    stars: int
    comment: str | None
    created_at: datetime
    #: Until then (or until the counterparty rates you) only you can see this rating.
    reveal_due_at: datetime
    revealed: bool


class PublicRatingOut(msgspec.Struct):
    stars: int
    comment: str | None
    created_at: datetime
    rater_display_name: str
    #: The rater's part in the transaction: organizer, member, driver or rider.
    role: str


class InsuranceOut(msgspec.Struct):
    #: True while a verified policy has not expired.
    verified: bool
    expires_at: datetime


class ReputationOut(msgspec.Struct):
    user_id: UUID
    score: float
    rating_average: float | None
    rating_count: int
    completed_count: int
    badges: list[str]
    insurance: InsuranceOut | None
    positive_lower_bound: float | None
    cancellation_rate: float
    complaints_received: int
    complaints_upheld: int


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    provider: Provider
    policy_number: PolicyNumber
    expires_at: AwareDateTime


class PolicyOut(msgspec.Struct):
    id: UUID
    user_id: UUID
    provider: str
    policy_number: str
    expires_at: datetime
    status: Literal["pending", "verified", "rejected"]
    submitted_at: datetime
    decided_at: datetime | None
    decision_reason: str | None


class RejectIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: ShortReason


class ComplaintIn(msgspec.Struct, forbid_unknown_fields=True):
    subject_type: SubjectTypeIn
    subject_id: UUID
    against_user_id: UUID
    text: ComplaintText
    category: ComplaintCategoryIn = "other"


class ComplaintOut(msgspec.Struct):
    id: UUID
    subject_type: str
    subject_id: UUID
    filer_id: UUID
    filer_display_name: str
    against_user_id: UUID
    against_display_name: str
    category: str
    text: str
    status: Literal["open", "upheld", "rejected"]
    created_at: datetime
    decided_at: datetime | None
    decision_reason: str | None
    forfeited_minor: int
    payout_minor: int
    #: The currency of the transaction complained about, which a payout is paid in (null for
    #: transactions recorded before currencies were).
    currency: str | None = None


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Literal["upheld", "rejected"]
    reason: Reason
    forfeit_deposit: bool = False
    #: Paid to the filer out of the insurance fund (purchase protection), upheld only.
    payout_minor: Annotated[int, Meta(ge=0, le=MAX_AMOUNT_MINOR)] = 0
    #: The payout's currency: the pool's (another is 422); needed only where none is on record.
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] | None = None


class BanIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: ShortReason


class BanOut(msgspec.Struct):
    user_id: UUID
    banned: bool


class RuleOut(msgspec.Struct):
    rule: str
    applies_to: str
    outcome: str


class ActionDecisionOut(msgspec.Struct):
    action: str
    verdict: Literal["allow", "require_deposit", "deny"]
    reasons: list[str]


class TrustOut(msgspec.Struct):
    score: float
    badges: list[str]
    banned: bool
    insurance: InsuranceOut | None
    #: The rules that decide when a deposit is asked for (or an action refused).
    deposit_rules: list[RuleOut]
    #: Reason codes of everything that limits the caller now (empty: nothing does).
    reasons: list[str]
    #: What the gate answers for each action at a small amount.
    decisions: list[ActionDecisionOut]


class AuditOut(msgspec.Struct):
    actor_id: UUID | None
    actor: str
    action: str
    target_id: UUID
    reason: str | None
    detail: str | None
    created_at: datetime
