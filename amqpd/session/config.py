"""Per-connection settings and the server properties sent in connection.start.

Rules of this module:
- ``ConnectionConfig`` is a frozen value built once at the process edge (cli/config) and
  handed to every ``Connection``; nothing in the core reads a global setting.
- Defaults are RabbitMQ 3.13's (``rabbit.app.src`` / ``rabbit_reader``): frame_max 131072,
  channel_max 2047, heartbeat 60 s, max_message_size 128 MiB, handshake_timeout 10 s,
  auth mechanisms PLAIN and AMQPLAIN.
- ``server_properties`` builds the connection.start table the way ``rabbit_reader:
  server_properties/1`` does: the capabilities table first, then the string properties
  sorted by key (RabbitMQ ``lists:usort``s them), every value a longstr.
"""

from __future__ import annotations

import platform
import socket

import attrs

from amqpd import __version__
from amqpd.protocol.fieldtable import FieldTable

#: What the broker can do (rabbit_reader:server_capabilities/1 for 0-9-1), in RabbitMQ's order.
SERVER_CAPABILITIES: tuple[str, ...] = (
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
)


def _default_cluster_name() -> str:
    # RabbitMQ's default cluster name is the node name, "rabbit@<host>".
    return f"amqpd@{socket.gethostname()}"


@attrs.frozen(kw_only=True)
class ConnectionConfig:
    """Settings one connection negotiates and enforces (docs/internals.md, session/)."""

    #: Offered in connection.tune; the client may ask for less, never more (0 = no limit).
    frame_max: int = 131072
    channel_max: int = 2047
    #: Seconds, offered in connection.tune; the client's tune-ok value is the one used.
    heartbeat: int = 60
    #: Largest message body accepted (RabbitMQ max_message_size); bigger → 406 on publish.
    max_message_size: int = 134217728
    #: RabbitMQ handshake_timeout: a connection not open by then is dropped.
    handshake_timeout: float = 10.0
    #: Offered in connection.start, in this order (RabbitMQ auth_mechanisms).
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN")
    #: RabbitMQ ssl_cert_login_from: what of a verified client certificate names the
    #: EXTERNAL user, "distinguished_name" (the subject, RFC 4514) or "common_name". The
    #: server derives the name (server/certificates.py); the session only receives it.
    ssl_cert_login_from: str = "distinguished_name"
    #: How long the server waits for close-ok after a server shutdown's connection.close.
    shutdown_timeout: float = 1.0
    #: rabbit_reader ?SILENT_CLOSE_DELAY: failed handshakes are hung up on after 3 s.
    silent_close_delay: float = 3.0
    #: rabbit_reader ?CLOSING_TIMEOUT: longest wait for close-ok after our connection.close.
    closing_timeout: float = 30.0
    product: str = "amqpd"
    version: str = __version__
    cluster_name: str = attrs.field(factory=_default_cluster_name)
    platform: str = f"Python {platform.python_version()}"
    copyright: str = "Copyright (c) the amqpd authors"
    information: str = "Licensed under the Apache License 2.0. Website: https://github.com/amqpd"

    def server_properties(self, capabilities: bool = True) -> FieldTable:
        """The connection.start ``server-properties`` table.

        RabbitMQ advertises no capabilities to 0-8 clients (``server_capabilities(_) -> []``).
        """
        caps: FieldTable = {name: True for name in SERVER_CAPABILITIES} if capabilities else {}
        strings = {
            "cluster_name": self.cluster_name,
            "copyright": self.copyright,
            "information": self.information,
            "platform": self.platform,
            "product": self.product,
            "version": self.version,
        }
        table: FieldTable = {"capabilities": caps}
        for key in sorted(strings):  # str encodes as longstr (S), as RabbitMQ sends them
            table[key] = strings[key]
        return table
