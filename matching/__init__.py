"""matching: pure geometry and assignment of riders to drivers; no I/O, no clock reads."""
