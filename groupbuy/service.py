"""Use cases of groupbuy: one function per user or job action, taking a session and `now`."""
