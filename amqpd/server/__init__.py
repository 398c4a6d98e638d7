"""amqpd server layer: sockets, per-connection tasks, shutdown (see docs/internals.md).

The only package besides the process edge (cli, pytest_plugin) that imports trio.
"""

from amqpd.server.connection_task import ConnectionTask, ServedConnection
from amqpd.server.listeners import (
    DEFAULT_LISTEN,
    ListenAddress,
    ListenError,
    open_listeners,
    parse_listen,
)
from amqpd.server.server import ConnectionFactory, Server, ServerConfig, serve
from amqpd.server.shutdown import ready_message, run_broker

__all__ = [
    "DEFAULT_LISTEN",
    "ConnectionFactory",
    "ConnectionTask",
    "ListenAddress",
    "ListenError",
    "ServedConnection",
    "Server",
    "ServerConfig",
    "open_listeners",
    "parse_listen",
    "ready_message",
    "run_broker",
    "serve",
]
