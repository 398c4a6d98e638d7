"""amqpd server layer (see docs/internals.md)."""
