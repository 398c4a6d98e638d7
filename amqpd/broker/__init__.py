"""amqpd broker layer (see docs/internals.md)."""
