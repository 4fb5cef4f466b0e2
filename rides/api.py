"""The rides controller: parse, authorize, call the service, shape the answer."""
