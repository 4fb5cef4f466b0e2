"""Pure tests of matching/: geometry, routing, index, feasibility, assignment, fares."""
