"""msgspec structs that the trust API reads and writes."""
