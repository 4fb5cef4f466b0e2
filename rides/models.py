"""SQLModel tables of rides."""
