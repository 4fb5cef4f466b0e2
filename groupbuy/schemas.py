"""msgspec structs that the groupbuy API reads and writes."""
