"""trust: ratings, reputation, deposits, insurance flags and complaints (see shared/DESIGN.md)."""
