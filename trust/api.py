"""The trust controller: parse, authorize, call the service, shape the answer."""
