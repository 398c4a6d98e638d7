"""Message, Broker (users) and the storage interface."""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker, User
from amqpd.broker.message import Message
from amqpd.protocol.properties import BasicProperties
from amqpd.storage import MemoryStore, MessageStore


def test_message_properties_cached_and_persistent() -> None:
    raw = BasicProperties(delivery_mode=2, content_type="text/plain").encode()
    m = Message("x", "k", raw, b"body")
    assert m.persistent
    props = m.properties
    assert props.content_type == "text/plain"
    assert m.properties is props  # decoded once
    assert not Message("x", "k", BasicProperties(delivery_mode=1).encode(), b"").persistent
    assert not Message("x", "k", b"", b"").persistent
    assert m.size == 4


def test_with_properties() -> None:
    m = Message("x", "k", b"", b"body")
    m2 = m.with_properties(BasicProperties(headers={"a": 1}, delivery_mode=2))
    assert m2 is not m and m2.persistent and m2.body == b"body"
    assert BasicProperties.decode(m2.properties_raw).headers == {"a": 1}
    assert m.headers() == {} and m2.headers() == {"a": 1}


def test_broker_defaults() -> None:
    b = Broker()
    assert set(b.vhosts) == {"/"}
    user = b.authenticate("guest", "guest")
    assert user == User("guest", ("administrator",), loopback_only=True)
    assert b.authenticate("guest", "wrong") is None
    assert b.authenticate("nobody", "guest") is None


def test_broker_users_and_vhosts() -> None:
    b = Broker(default_user=False)
    assert b.authenticate("guest", "guest") is None
    b.add_user("u", "p", tags=("monitoring",))
    assert b.authenticate("u", "p") == User("u", ("monitoring",), False)
    assert b.add_vhost("v") is b.add_vhost("v")
    assert b.vhosts["v"].name == "v"
    b.delete_user("u")
    assert b.authenticate("u", "p") is None


def test_memory_store() -> None:
    store: MessageStore = MemoryStore()
    store.put(1, b"a")
    store.put(2, b"b")
    assert store.get(1) == b"a" and len(store) == 2
    with pytest.raises(KeyError):
        store.put(1, b"again")
    store.delete(1)
    store.delete(1)
    store.sync()
    assert list(store.keys()) == [2] and store.get(1) is None
