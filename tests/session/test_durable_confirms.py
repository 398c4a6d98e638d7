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


def test_one_commit_callback_per_channel_whatever_the_publishes(
    conn: FakeConnection, log: DiskDurableLog
) -> None:
    ch = _channel(conn)
    for _ in range(100):
        _publish(conn, ch, "dq", PERSISTENT)
    assert len(log._waiters) == 1  # not one per publish
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=100, multiple=True)]
    assert len(log._waiters) == 0


def test_publishes_during_a_commit_wait_for_the_next_one(
    conn: FakeConnection, log: DiskDurableLog
) -> None:
    """As the persister runs it: what is published while a batch is being written is
    not on disk when that batch completes, so its confirms wait for the next commit."""
    ch = _channel(conn)
    for _ in range(3):
        _publish(conn, ch, "dq", PERSISTENT)
    batch = log.prepare_commit()
    assert batch is not None
    for _ in range(2):
        _publish(conn, ch, "dq", PERSISTENT)  # 4, 5: appended while 1-3 are written
    batch.write()
    run_callbacks(log.complete_commit(batch))
    assert conn.methods() == [M.BasicAck(delivery_tag=3, multiple=True)]
    _publish(conn, ch, "tq", PERSISTENT)  # 6: not durable, confirmed at once but alone
    assert conn.methods() == [M.BasicAck(delivery_tag=6, multiple=False)]
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=5, multiple=True)]  # 4 and 5
    _publish(conn, ch, "dq", PERSISTENT)  # 7: the channel watches the log again
    assert conn.methods() == []
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=7, multiple=False)]


def test_channels_are_confirmed_independently(conn: FakeConnection, log: DiskDurableLog) -> None:
    one = _channel(conn)
    two = conn.open(2)
    conn.call(two, M.ConfirmSelect())
    conn.take()
    _publish(conn, one, "dq", PERSISTENT)
    _publish(conn, two, "dq", PERSISTENT)
    _publish(conn, one, "dq", PERSISTENT)
    two.on_closed()  # its confirm is dropped; channel one's are not
    run_callbacks(log.commit())
    assert conn.methods() == [M.BasicAck(delivery_tag=2, multiple=True)]


def test_acks_and_deliveries_of_a_batch_are_one_record_each(
    conn: FakeConnection, log: DiskDurableLog
) -> None:
    """Through the channel: ten gets and ten single acks between two commits are one
    MessagesRemoved record (the delivered markers of acked messages are not written);
    the one left unacked gets its marker."""
    from amqpd.storage.entries import MessagesDelivered, MessagesRemoved
    from amqpd.storage.recovery import recover_segments

    ch = _channel(conn)
    for _ in range(11):
        _publish(conn, ch, "dq", PERSISTENT)
    run_callbacks(log.commit())
    conn.take()
    for _ in range(11):
        conn.call(ch, M.BasicGet(queue="dq"))
    conn.take()
    for tag in range(1, 11):
        conn.call(ch, M.BasicAck(delivery_tag=tag))
    run_callbacks(log.commit())
    kinds = [r.kind for _, r in recover_segments(log.log.files).records]
    assert kinds.count(MessagesRemoved.KIND) == 1
    assert kinds.count(MessagesDelivered.KIND) == 1
    assert log.catalog.queues[("/", "dq")].count == 1
