"""The groupbuy controller: parse, authorize, call the service, shape the answer."""
