"""amqpd protocol layer: AMQP 0-9-1 (RabbitMQ's dialect) as bytes in, values out.

Rules of this package (see docs/internals.md for the contract):

- Sans-I/O and synchronous: no sockets, no trio, no clocks. It imports nothing from amqpd
  but ``amqpd.errors``; malformed input raises the ``AMQPError`` RabbitMQ would answer with.
- Modules: ``constants``; ``fieldtable`` (tables/arrays); ``methods`` (generated from
  ``spec/`` by ``_generate``: edit the generator, never methods.py); ``properties``
  (BasicProperties); ``frames`` (FrameReader and encoders); ``assembler`` (frames ->
  commands, per channel); ``_erl`` (Erlang-style term text for RabbitMQ-identical errors).
"""
