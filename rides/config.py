"""What the rides domain reads from settings, in one struct (built by the app, passed in)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from matching.feasibility import InsertionLimits
from matching.routing import EstimatingRouter


class RideConfig(msgspec.Struct, frozen=True, kw_only=True):
    router: EstimatingRouter
    limits: InsertionLimits
    #: h3 resolution of the matcher's corridor index, and of the regions it works in.
    h3_resolution: int = 8
    region_resolution: int = 4
    #: Requests and offers arriving within this window are matched together.
    match_window_s: float = 3.0
    #: A proposal expires after this, or this long before departure, whichever comes first.
    proposal_ttl: timedelta = timedelta(hours=3)
    proposal_lead: timedelta = timedelta(minutes=15)
    #: The platform's fee on a completed ride, basis points of the fare.
    fee_bp: int = 1_000
    #: A rider cancelling this close to pickup (or not showing up) pays this share of the fare.
    late_cancel_window: timedelta = timedelta(hours=1)
    late_cancel_fee_bp: int = 2_000
    #: Offers depart, and requests' windows close, at most this far ahead.
    max_ahead: timedelta = timedelta(days=14)


def ride_config(settings: Any) -> RideConfig:
    """The rides configuration of app settings (COPOOL_ environment, see the README)."""
    return RideConfig(
        router=EstimatingRouter(
            average_speed_kmh=settings.average_speed_kmh,
            circuity_factor=settings.circuity_factor,
        ),
        limits=InsertionLimits(max_added_delay_s=settings.ride_max_added_delay_minutes * 60.0),
        h3_resolution=settings.h3_resolution,
        match_window_s=settings.ride_match_window_s,
        proposal_ttl=timedelta(minutes=settings.ride_proposal_ttl_minutes),
        proposal_lead=timedelta(minutes=settings.ride_proposal_lead_minutes),
        fee_bp=settings.ride_fee_bp,
        late_cancel_window=timedelta(minutes=settings.ride_late_cancel_minutes),
        late_cancel_fee_bp=settings.ride_late_cancel_fee_bp,
    )
