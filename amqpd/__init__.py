"""amqpd: an AMQP 0-9-1 message broker in Python, compatible with RabbitMQ clients."""

__version__ = "0.1.0"
