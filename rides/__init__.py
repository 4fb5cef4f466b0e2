"""rides: offers, requests, matches, acceptance, completion and fares (see shared/DESIGN.md)."""
