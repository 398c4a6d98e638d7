"""amqpd storage layer (see docs/internals.md)."""
