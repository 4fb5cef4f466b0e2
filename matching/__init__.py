"""matching: see shared/DESIGN.md."""
