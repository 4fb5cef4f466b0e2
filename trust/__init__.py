"""trust: see shared/DESIGN.md."""
