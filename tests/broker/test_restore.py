"""Durable broker state: what the vhost logs, and recover() after a clean stop or a crash."""

from __future__ import annotations

from amqpd.broker.broker import Broker
from amqpd.broker.durability import enqueue_routed
from amqpd.broker.message import Message
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles

from .conftest import FakeConsumer

PERSISTENT = BasicProperties(delivery_mode=2).encode()
TRANSIENT = BasicProperties(delivery_mode=1).encode()


def _start(files: FakeFiles) -> tuple[Broker, DiskDurableLog]:
    log = DiskDurableLog.open(files, segment_size=4096)
    broker = Broker()
    recover(broker, log)
    return broker, log


def _publish(vh: VirtualHost, exchange: str, rk: str, body: bytes, props: bytes = PERSISTENT):
    queues, message = vh.route_message(exchange, Message(exchange, rk, props, body))
    enqueue_routed(vh.durable, vh.name, message, queues)
    return message


def _bodies(vh: VirtualHost, name: str) -> list[tuple[bytes, bool]]:
    out = []
    queue = vh.queues[name]
    while (entry := queue.get()) is not None:
        out.append((entry.message.body, entry.redelivered))
    return out


def _topology(vh: VirtualHost) -> None:
    vh.declare_exchange("dx", "topic", durable=True)
    vh.declare_exchange("tx", "fanout", durable=False)
    vh.declare_exchange("ae", "fanout", durable=True, arguments={"alternate-exchange": "x"})
    vh.declare_queue("dq", durable=True, arguments={"x-max-priority": 3})
    vh.declare_queue("dq2", durable=True)
    vh.declare_queue("tq", durable=False)
    vh.bind_queue("dq", "dx", "a.*")
    vh.bind_queue("tq", "dx", "a.*")  # to a transient queue: not durable
    vh.bind_queue("dq2", "amq.fanout", "")
    vh.bind_exchange("dx", "amq.topic", "k.#")  # exchange to exchange
    vh.bind_queue("dq2", "tx", "")  # from a transient exchange: not durable


def test_durable_topology_survives_a_clean_restart() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    _topology(broker.vhosts["/"])
    log.close()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    assert {"dx", "ae"} <= set(vh.exchanges) and "tx" not in vh.exchanges
    assert vh.exchanges["dx"].type == "topic" and vh.exchanges["ae"].alternate_exchange == "x"
    assert set(vh.queues) == {"dq", "dq2"}
    assert vh.queues["dq"].arguments == {"x-max-priority": 3}
    assert log.report.clean_shutdown
    # The bindings route again, exchange-to-exchange included.
    assert vh.route("amq.topic", Message("amq.topic", "k.a.b", b"", b"")) == []
    assert vh.route("dx", Message("dx", "a.b", b"", b"")) == [vh.queues["dq"]]
    assert vh.route("amq.fanout", Message("amq.fanout", "", b"", b"")) == [vh.queues["dq2"]]


def test_persistent_messages_on_durable_queues_come_back_in_order_once() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    _topology(vh)
    for i in range(5):
        _publish(vh, "dx", "a.x", b"p%d" % i)
        _publish(vh, "dx", "a.x", b"t%d" % i, TRANSIENT)
    _publish(vh, "amq.fanout", "", b"fan")
    log.close()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    assert _bodies(vh, "dq") == [(b"p%d" % i, False) for i in range(5)]
    assert _bodies(vh, "dq2") == [(b"fan", False)]
    assert log.report.messages == 6


def test_acks_and_redelivered_after_a_clean_restart() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    for i in range(6):
        _publish(vh, "", "q", b"m%d" % i)
    queue = vh.queues["q"]
    consumer = FakeConsumer(credit=None)
    queue.add_consumer(consumer)
    got = consumer.delivered
    queue.ack(got[0])
    queue.discard(got[1])
    queue.remove_consumer(consumer)
    queue.requeue(got[2:4])  # delivered, back in the queue: redelivered after restart
    # m4, m5 still unacked when the broker stops (the channel would requeue them)
    queue.requeue(got[4:])
    log.close()
    broker, _ = _start(files)
    assert _bodies(broker.vhosts["/"], "q") == [(b"m%d" % i, True) for i in range(2, 6)]


def test_after_a_crash_every_message_is_redelivered_and_uncommitted_work_is_lost() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    for i in range(3):
        _publish(vh, "", "q", b"m%d" % i)
    log.commit()
    _publish(vh, "", "q", b"never committed")
    files.crash()
    broker, log = _start(files)
    assert not log.report.clean_shutdown
    vh = broker.vhosts["/"]
    assert _bodies(vh, "q") == [(b"m%d" % i, True) for i in range(3)]
    # The crash marks were logged: after a clean restart they are still redelivered.
    # (The gets above took them; they are unacked, so they stay.)
    log.close()
    broker, _ = _start(files)
    assert _bodies(broker.vhosts["/"], "q") == [(b"m%d" % i, True) for i in range(3)]


def test_deletes_purge_and_limits_are_logged() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_queue("gone", durable=True)
    vh.declare_queue("purged", durable=True)
    vh.declare_queue("short", durable=True, arguments={"x-max-length": 2})
    vh.declare_queue(
        "full", durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    vh.declare_exchange("auto", "direct", durable=True, auto_delete=True)
    vh.bind_queue("gone", "auto", "k")
    for i in range(3):
        for name in ("gone", "purged", "short", "full"):
            _publish(vh, "", name, b"%s%d" % (name.encode(), i))
    vh.purge_queue("purged")
    vh.delete_queue("gone")  # its binding goes, and with it the auto-delete exchange
    log.close()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    assert "gone" not in vh.queues and "auto" not in vh.exchanges
    assert _bodies(vh, "purged") == []
    assert _bodies(vh, "short") == [(b"short1", False), (b"short2", False)]
    assert _bodies(vh, "full") == [(b"full0", False)]
    assert not log.catalog.bindings


def test_exchange_delete_and_unbind() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.declare_exchange("x", "direct", durable=True)
    vh.declare_exchange("y", "direct", durable=True)
    vh.declare_queue("q", durable=True)
    vh.bind_queue("q", "x", "k", {"a": 1})
    vh.bind_queue("q", "y", "k")
    vh.bind_exchange("y", "x", "k2")
    vh.unbind_queue("q", "y", "k")
    vh.delete_exchange("x")
    log.close()
    broker, _ = _start(files)
    vh = broker.vhosts["/"]
    assert "x" not in vh.exchanges and "y" in vh.exchanges
    assert vh.statistics().bindings == 0


def test_without_a_log_nothing_is_recorded() -> None:
    broker = Broker()
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    message = _publish(vh, "", "q", b"m")
    assert message.store_id == 0 and vh.queues["q"].journal is None


def test_vhosts_come_back_and_new_vhosts_get_the_log() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    broker.add_vhost("v").declare_queue("q", durable=True)
    log.close()
    broker, log = _start(files)
    assert "q" in broker.vhosts["v"].queues
    assert broker.vhosts["v"].durable is log
    assert broker.add_vhost("w").durable is log


def test_server_named_durable_queue_comes_back_under_its_name() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    name = broker.vhosts["/"].declare_queue("", durable=True).name
    assert name.startswith("amq.gen-")
    _publish(broker.vhosts["/"], "", name, b"m")
    log.close()
    broker, log = _start(files)
    assert _bodies(broker.vhosts["/"], name) == [(b"m", False)]


def test_an_empty_log_is_a_new_data_directory_not_a_crash() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    assert log.report.empty and not log.report.clean_shutdown  # no stop was ever recorded
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    _publish(vh, "", "q", b"m")
    log.close()
    broker, log = _start(files)
    assert not log.report.empty and log.report.clean_shutdown
    assert _bodies(broker.vhosts["/"], "q") == [(b"m", False)]
    # A log with segments but no CleanShutdown record at its end is a crash, and says so.
    _publish(broker.vhosts["/"], "", "q", b"n")
    log.commit()
    files.crash()
    broker, log = _start(files)
    assert not log.report.empty and not log.report.clean_shutdown
    assert _bodies(broker.vhosts["/"], "q") == [(b"m", True), (b"n", True)]
