"""pytest plugin: fixtures that start an amqpd broker for a test suite (filled in by the server work)."""
