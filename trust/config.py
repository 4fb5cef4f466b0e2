"""The trust rules as one value, built from settings by the app and handed to the services."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from trust.policy import PolicyRules
from trust.score import ScoreParams


class TrustConfig(msgspec.Struct, frozen=True, kw_only=True):
    score: ScoreParams = ScoreParams()
    rules: PolicyRules = PolicyRules()
    #: How long after completion the parties may rate each other (ratings reveal at its end).
    rating_window: timedelta = timedelta(days=14)
    #: A deposit's hold expires after this unless released or forfeited before.
    deposit_ttl: timedelta = timedelta(days=45)
    #: Purchase protection premium per join, in basis points of the join's amount.
    protection_premium_bp: int = 200
