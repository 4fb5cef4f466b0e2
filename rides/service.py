"""Use cases of rides: one function per user or job action, taking a session and `now`."""
