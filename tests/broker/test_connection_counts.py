"""The per-vhost connection count behind max-connections, kept as connections come and go.

Broker keeps a count per vhost and per user (so connection.open does not count every
connection); these check each limit sees exactly the open connections it is about.
"""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.limits import UserLimits, VhostLimits
from amqpd.broker.permissions import Permission
from amqpd.errors import NotAllowed


def test_the_limit_counts_open_connections_of_its_vhost_only() -> None:
    broker = Broker()
    guest = broker.users["guest"]
    broker.add_vhost("v", VhostLimits(max_connections=2))
    broker.set_permissions("guest", "v", Permission())
    others = [object() for _ in range(3)]
    for owner in others:
        broker.open_connection(owner, guest, "/")  # another vhost: not counted for v
    a, b, c = object(), object(), object()
    broker.open_connection(a, guest, "v")
    broker.open_connection(b, guest, "v")
    with pytest.raises(NotAllowed, match="connection limit \\(2\\) is reached"):
        broker.open_connection(c, guest, "v")
    broker.close_connection(a)
    broker.close_connection(a)  # twice: counted down once
    broker.open_connection(c, guest, "v")
    with pytest.raises(NotAllowed, match="connection limit \\(2\\) is reached"):
        broker.open_connection(object(), guest, "v")
    for owner in (b, c):
        broker.close_connection(owner)
    broker.open_connection(a, guest, "v")
    broker.open_connection(b, guest, "v")


def test_a_refused_open_is_not_counted() -> None:
    broker = Broker()
    guest = broker.users["guest"]
    broker.add_vhost("v", VhostLimits(max_connections=1))
    with pytest.raises(NotAllowed, match=r"refused for user 'guest'$"):
        broker.open_connection(object(), guest, "v")  # no permissions yet
    broker.set_permissions("guest", "v", Permission())
    broker.open_connection(object(), guest, "v")


def test_connection_counts_follow_opens_and_closes_per_vhost_and_user():
    broker = Broker()
    guest = broker.users["guest"]
    broker.add_user("u", "p")
    broker.add_vhost("v", VhostLimits(max_connections=2))
    broker.set_permissions("guest", "v", Permission())
    broker.set_permissions("u", "v", Permission())
    broker.user_limits["guest"] = UserLimits(max_connections=2)
    a, b, c = object(), object(), object()
    broker.open_connection(a, guest, "/")
    broker.open_connection(b, guest, "v")
    with pytest.raises(NotAllowed, match="connection limit \\(2\\) is reached"):
        broker.open_connection(c, guest, "v")  # guest's own limit: a and b
    broker.open_connection(c, broker.users["u"], "v")
    with pytest.raises(NotAllowed, match="access to vhost 'v' refused for user 'u'"):
        broker.open_connection(object(), broker.users["u"], "v")  # the vhost's: b and c
    broker.close_connection(b)
    broker.close_connection(b)  # twice: counted once
    broker.open_connection(object(), guest, "v")
    broker.close_connection(a)
    assert broker.connections_of("guest") and len(broker.connections_of("u")) == 1
