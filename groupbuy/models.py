"""SQLModel tables of groupbuy."""
