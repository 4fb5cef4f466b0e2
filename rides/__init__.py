"""rides: see shared/DESIGN.md."""
