"""Use cases of trust: one function per thing a user or a job does, taking a session and `now`."""
