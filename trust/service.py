"""Use cases of trust: one function per user or job action, taking a session and `now`."""
