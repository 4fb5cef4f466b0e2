"""groupbuy: pools, price tiers, joins and the settlement of a pool (see shared/DESIGN.md)."""
