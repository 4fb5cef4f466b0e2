"""SQLModel tables of trust."""
