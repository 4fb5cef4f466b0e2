"""groupbuy: see shared/DESIGN.md."""
