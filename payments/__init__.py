"""payments: one double-entry ledger under all money (see README, Money)."""
