"""rides: ride offers, ride requests, matches, acceptance, completion and fares (see shared/DESIGN.md)."""
