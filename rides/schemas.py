"""msgspec structs that the rides API reads and writes."""
