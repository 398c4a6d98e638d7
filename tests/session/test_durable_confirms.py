"""Publisher confirms and tx.commit-ok wait for the durable log's fsync."""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.restore import recover
from amqpd.protocol import methods as M
from amqpd.protocol.properties import BasicProperties
from amqpd.session.channel import Channel
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import run_callbacks
from amqpd.storage.fakefiles import FakeFiles

from .fakes_channel import FakeConnection

PERSISTENT = BasicProperties(delivery_mode=2)


@pytest.fixture
def log() -> DiskDurableLog:
    return DiskDurableLog.open(FakeFiles())


@pytest.fixture
def conn(log: DiskDurableLog) -> FakeConnection:
    broker = Broker()
    recover(broker, log)
    return FakeConnection(broker)


def _channel(conn: FakeConnection, *, confirm: bool = True) -> Channel:
    ch = conn.open(1)
    conn.call(ch, M.QueueDeclare(queue="dq", durable=True))
    conn.call(ch, M.QueueDeclare(queue="tq"))
    if confirm:
        conn.call(ch, M.ConfirmSelect())
    else:
        conn.call(ch, M.TxSelect())
    conn.take()
    return ch


def _publish(conn: FakeConnection, ch: Channel, queue: str, props: BasicProperties) -> None:
    conn.call(ch, M.BasicPublish(exchange="", routing_key=queue), props, b"body")


def test_persistent_confirm_waits_for_the_fsync_and_coalesces(
    conn: FakeConnection, log: DiskDurableLog
) -> None:
    ch = _channel(conn)
    for _ in range(5):
        _publish(conn, ch, "dq", PERSISTENT)
    assert conn.methods() == []  # nothing confirmed before the disk has it
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=5, multiple=True)]


def test_transient_or_non_durable_confirms_at_once(conn: FakeConnection) -> None:
    ch = _channel(conn)
    _publish(conn, ch, "tq", PERSISTENT)  # persistent, but the queue is not durable
    _publish(conn, ch, "dq", BasicProperties(delivery_mode=1))
    assert [type(m) for m in conn.methods()] == [M.BasicAck, M.BasicAck]


def test_mixed_order_acks_the_transient_one_first(
    conn: FakeConnection, log: DiskDurableLog
) -> None:
    ch = _channel(conn)
    _publish(conn, ch, "dq", PERSISTENT)
    _publish(conn, ch, "tq", PERSISTENT)
    assert conn.methods() == [M.BasicAck(delivery_tag=2, multiple=False)]
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=1, multiple=False)]


def test_closed_channel_gets_no_late_confirm(conn: FakeConnection, log: DiskDurableLog) -> None:
    ch = _channel(conn)
    _publish(conn, ch, "dq", PERSISTENT)
    ch.on_closed()
    run_callbacks(log.commit())
    assert conn.methods() == []


def test_tx_commit_ok_waits_for_the_fsync(conn: FakeConnection, log: DiskDurableLog) -> None:
    ch = _channel(conn, confirm=False)
    _publish(conn, ch, "dq", PERSISTENT)
    conn.call(ch, M.TxCommit())
    assert conn.methods() == []
    run_callbacks(log.commit())
    assert conn.methods() == [M.TxCommitOk()]
    _publish(conn, ch, "tq", PERSISTENT)
    conn.call(ch, M.TxCommit())
    assert conn.methods() == [M.TxCommitOk()]  # nothing durable: at once
