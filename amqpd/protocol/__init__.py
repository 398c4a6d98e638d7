"""amqpd protocol layer (see docs/internals.md)."""
