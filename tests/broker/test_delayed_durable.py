"""Durable delayed messages: a durable x-delayed-message exchange keeps its pending messages
in the log, and they come back after a restart or a crash, due at the same wall-clock time
(one whose time has passed is routed at once)."""

from __future__ import annotations

from typing import Any

from amqpd.broker.broker import Broker
from amqpd.broker.durability import delayed_store
from amqpd.broker.message import Message
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _start(files: FakeFiles, wall: Wall) -> tuple[Broker, DiskDurableLog]:
    log = DiskDurableLog.open(files, segment_size=4096)
    broker = Broker(wall_clock=wall)
    recover(broker, log)
    return broker, log


def _setup(vh: VirtualHost, *, durable: bool = True) -> None:
    args = {"x-delayed-type": "direct"}
    vh.declare_exchange("dx", "x-delayed-message", durable=durable, arguments=args)
    vh.declare_queue("q", durable=True)
    vh.bind_queue("q", "dx", "rk")


def _publish(vh: VirtualHost, delay: int, body: bytes, now: float, **props: Any) -> list[Any]:
    raw = BasicProperties(headers={"x-delay": delay, "h": 1}, **props).encode()
    queues, _message = vh.route_message("dx", Message("dx", "rk", raw, body), now)
    return queues


def _store(log: DiskDurableLog) -> int:
    """How many messages the log holds in the exchange's store (all the catalog knows)."""
    return log.catalog.queues[("/", delayed_store("dx"))].count


def test_pending_delayed_messages_survive_a_crash_and_keep_their_due_time() -> None:
    files, wall = FakeFiles(), Wall(1000.0)
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    _setup(vh)
    assert _publish(vh, 5000, b"late", now=10.0, delivery_mode=2) == []
    assert _publish(vh, 1000, b"soon", now=10.0, delivery_mode=1) == []  # transient too
    log.commit()
    files.crash()

    wall.t = 1003.0  # 3 s of wall time passed while the broker was down
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    assert _store(log) == 2
    # Scheduled by the first tick, which brings the monotonic time: due at once.
    assert vh.next_deadline() is not None and vh.next_deadline() <= 0.0
    vh.tick(500.0)
    q = vh.queues["q"]
    assert q.message_count == 1  # "soon" was overdue: routed at once
    assert vh.next_deadline() == 502.0  # "late" had 2 s left
    vh.tick(502.0)
    assert q.message_count == 2
    first, second = q.get(502.0), q.get(502.0)
    assert first is not None and second is not None
    assert [first.message.body, second.message.body] == [b"soon", b"late"]
    headers = second.message.headers()
    assert headers == {"x-delay": -5000, "h": 1}  # our own headers are gone
    assert second.message.properties.delivery_mode == 2
    # Released messages left the store; "late" is persistent on a durable queue: logged.
    assert _store(log) == 0
    log.commit()
    files.crash()
    broker, log = _start(files, wall)
    assert [e.message.body for e in _drain(broker.vhosts["/"], "q")] == [b"late"]


def _drain(vh: VirtualHost, name: str) -> list[Any]:
    out = []
    while (entry := vh.queues[name].get()) is not None:
        out.append(entry)
    return out


def test_the_alternate_exchange_copy_and_the_held_copy_are_logged_apart() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    vh.declare_exchange("ae", "fanout", durable=True)
    vh.declare_queue("aq", durable=True)
    vh.bind_queue("aq", "ae", "")
    args = {"x-delayed-type": "direct", "alternate-exchange": "ae"}
    vh.declare_exchange("dx", "x-delayed-message", durable=True, arguments=args)
    raw = BasicProperties(headers={"x-delay": 100}, delivery_mode=2).encode()
    from amqpd.broker.durability import enqueue_routed

    queues, message = vh.route_message("dx", Message("dx", "rk", raw, b"m"), 0.0)
    assert [q.name for q in queues] == ["aq"]
    enqueue_routed(vh.durable, vh.name, message, queues, 0.0)
    log.close()
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    assert vh.queues["aq"].message_count == 1 and _store(log) == 1


def test_transient_delayed_exchange_keeps_nothing() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    _setup(vh, durable=False)
    _publish(vh, 100, b"m", now=0.0, delivery_mode=2)
    assert ("/", delayed_store("dx")) not in log.catalog.queues
    log.close()
    broker, _log = _start(files, wall)
    assert "dx" not in broker.vhosts["/"].exchanges
    assert broker.vhosts["/"].next_deadline() is None


def test_deleting_the_exchange_drops_its_pending_messages() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    broker, log = _start(files, wall)
    vh = broker.vhosts["/"]
    _setup(vh)
    _publish(vh, 100, b"m", now=0.0)
    vh.delete_exchange("dx")
    log.close()
    broker, log = _start(files, wall)
    assert ("/", delayed_store("dx")) not in log.catalog.queues
    vh = broker.vhosts["/"]
    vh.tick(10.0)
    assert vh.queues["q"].message_count == 0


def test_the_store_is_not_a_queue_clients_can_see() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    broker, log = _start(files, wall)
    _setup(broker.vhosts["/"])
    _publish(broker.vhosts["/"], 100, b"m", now=0.0)
    log.close()
    broker, _log = _start(files, wall)
    assert set(broker.vhosts["/"].queues) == {"q"}


def test_a_restart_does_not_log_the_store_again() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    broker, log = _start(files, wall)
    _setup(broker.vhosts["/"])
    log.close()
    for _ in range(3):
        broker, log = _start(files, wall)
        store = log.catalog.queues[("/", delayed_store("dx"))]
        assert len(store.segments) == 1  # declared once, not once per start
        log.close()


def test_a_durable_delayed_exchange_from_before_the_log_gets_its_store() -> None:
    files, wall = FakeFiles(), Wall(0.0)
    log = DiskDurableLog.open(files, segment_size=4096)
    broker = Broker(wall_clock=wall)
    _setup(broker.vhosts["/"])  # declared while no log is attached: nothing logged
    log.exchange_declared(
        "/",
        "dx",
        "x-delayed-message",
        auto_delete=False,
        internal=False,
        arguments={"x-delayed-type": "direct"},
    )
    log.close()
    broker, log = _start(files, wall)
    assert ("/", delayed_store("dx")) in log.catalog.queues
