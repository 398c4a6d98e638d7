"""amqpd session layer (see docs/internals.md)."""
