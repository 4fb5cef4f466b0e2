"""payments: see shared/DESIGN.md."""
