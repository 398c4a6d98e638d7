"""Per-vhost and per-user limits (``set_vhost_limits``, ``set_user_limits``), RabbitMQ's errors.

Rules of this module (``rabbit_vhost_limit``, ``rabbit_reader``, ``rabbit_channel``;
https://www.rabbitmq.com/docs/vhosts#limits), texts checked on the oracle:
- ``None`` or a negative number means no limit; 0 means none at all.
- max-connections is checked at connection.open: 530 NOT_ALLOWED "access to vhost 'v'
  refused for user 'u': connection limit (N) is reached".
- max-queues is checked when a queue.declare would create a queue (a redeclare is fine):
  406 PRECONDITION_FAILED "cannot declare queue 'q': queue limit in vhost 'v' (N) is reached".
- A user's max-connections is checked at connection.open after the vhost's: 530 "connection
  refused for user 'u': user connection limit (N) is reached"; max-channels counts the
  user's channels on the whole node when one more is opened: 530 "number of channels
  opened for user 'u' has reached the maximum allowed user limit of (N)".
"""

from __future__ import annotations

import attrs

from amqpd.errors import NotAllowed, PreconditionFailed


def _reached(limit: int | None, count: int) -> bool:
    return limit is not None and limit >= 0 and count >= limit


@attrs.frozen(slots=True)
class VhostLimits:
    max_connections: int | None = None
    max_queues: int | None = None

    def check_connection(self, vhost: str, user: str, open_connections: int) -> None:
        if _reached(self.max_connections, open_connections):
            raise NotAllowed(
                f"access to vhost '{vhost}' refused for user '{user}': connection limit "
                f"({self.max_connections}) is reached"
            )

    def check_queue(self, vhost: str, queue: str, queues: int) -> None:
        if _reached(self.max_queues, queues):
            raise PreconditionFailed(
                f"cannot declare queue '{queue}': queue limit in vhost '{vhost}' "
                f"({self.max_queues}) is reached"
            )


@attrs.frozen(slots=True)
class UserLimits:
    max_connections: int | None = None
    max_channels: int | None = None

    def check_connection(self, user: str, open_connections: int) -> None:
        if _reached(self.max_connections, open_connections):
            raise NotAllowed(
                f"connection refused for user '{user}': user connection limit "
                f"({self.max_connections}) is reached"
            )

    def check_channel(self, user: str, open_channels: int) -> None:
        if _reached(self.max_channels, open_channels):
            raise NotAllowed(
                f"number of channels opened for user '{user}' has reached the maximum "
                f"allowed user limit of ({self.max_channels})"
            )
