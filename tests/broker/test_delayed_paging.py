"""Bounded RAM for durable delayed messages: once a held message's record is committed its
schedule entry keeps only its place in the log (durability.LoggedDelayed), the message is
read back intact when it is due, and a restart reads no bodies to rebuild the schedule."""

from __future__ import annotations

from typing import Any

from amqpd.broker.broker import Broker
from amqpd.broker.durability import LoggedDelayed, delayed_store, enqueue_routed
from amqpd.broker.message import Message
from amqpd.broker.restore import recover
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.durable import run_callbacks
from amqpd.storage.fakefiles import FakeFiles


def _start(files: FakeFiles, wall: float = 1000.0) -> tuple[Broker, DiskDurableLog]:
    log = DiskDurableLog.open(files, segment_size=4096)
    broker = Broker(wall_clock=lambda: wall)
    recover(broker, log)
    return broker, log


def _setup(vh: VirtualHost, *, durable: bool = True) -> None:
    args = {"x-delayed-type": "direct"}
    vh.declare_exchange("dx", "x-delayed-message", durable=durable, arguments=args)
    vh.declare_queue("q", durable=True)
    vh.bind_queue("q", "dx", "rk")


def _publish(vh: VirtualHost, delay: int, body: bytes, now: float = 0.0, **props: Any) -> None:
    headers = {"x-delay": delay, "h": "v"}
    raw = BasicProperties(headers=headers, **props).encode()
    assert vh.route_message("dx", Message("dx", "rk", raw, body), now)[0] == []


def _held(vh: VirtualHost) -> list[Any]:
    return vh.delayed.held()


def _drain(vh: VirtualHost, now: float) -> list[Message]:
    out = []
    while (entry := vh.queues["q"].get(now)) is not None:
        out.append(entry.message)
    return out


def _paged_out(held: object) -> bool:
    """Structurally: no message, and nothing of it but str/int/tuple-of-str fields."""
    if not isinstance(held, LoggedDelayed) or held.message is not None:
        return False
    fields = [getattr(held, name) for name in LoggedDelayed.__slots__ if name != "source"]
    return not any(isinstance(f, (bytes, bytearray, Message)) for f in fields)


def test_a_held_message_keeps_its_body_in_memory_only_until_committed() -> None:
    broker, log = _start(FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh)
    _publish(vh, 5000, b"first" * 100)
    (held,) = _held(vh)
    assert isinstance(held, LoggedDelayed) and held.message is not None  # not on disk yet
    log.commit()
    _publish(vh, 6000, b"second")  # the next hold (or tick) notices the commit
    paged = [h for h in _held(vh) if _paged_out(h)]
    assert paged == [held]
    log.commit()
    vh.tick(1.0)  # nothing due, but the tick pages the committed one out too
    assert all(_paged_out(h) for h in _held(vh))
    assert log.bodies.reads == 0


def test_the_commit_itself_pages_the_held_messages_out() -> None:
    broker, log = _start(FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh)
    _publish(vh, 5000, b"a" * 500)
    _publish(vh, 6000, b"b" * 500)
    assert not any(_paged_out(h) for h in _held(vh))
    run_callbacks(log.commit())  # as the persister runs them
    assert all(_paged_out(h) for h in _held(vh))


def test_a_paged_out_message_is_read_back_intact_when_due() -> None:
    broker, log = _start(FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh)
    body = bytes(range(256)) * 8
    _publish(
        vh,
        5000,
        body,
        content_type="application/x-test",
        correlation_id="c-1",
        delivery_mode=2,
        priority=3,
    )
    log.commit()
    vh.tick(1.0)
    assert all(_paged_out(h) for h in _held(vh))
    vh.tick(5.0)
    (message,) = _drain(vh, 5.0)
    assert message.body == body
    props = message.properties
    assert props.headers == {"x-delay": -5000, "h": "v"}  # ours are gone, x-delay negated
    assert (props.content_type, props.correlation_id, props.delivery_mode, props.priority) == (
        "application/x-test",
        "c-1",
        2,
        3,
    )
    assert message.exchange == "dx" and message.routing_key == "rk"
    assert log.bodies.reads >= 1
    store = log.catalog.queues[("/", delayed_store("dx"))]
    assert store.count == 0 and store.pins == {}


def test_paged_out_messages_due_together_leave_in_due_order_not_log_order() -> None:
    broker, log = _start(FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh)
    delays = [9000, 3000, 7000, 1000, 5000, 2000, 8000, 4000, 6000, 10000]
    for delay in delays:
        _publish(vh, delay, f"body-{delay}".encode() * 20)
    log.commit()
    vh.tick(0.5)
    assert all(_paged_out(h) for h in _held(vh))
    vh.tick(20.0)
    bodies = [m.body for m in _drain(vh, 20.0)]
    assert bodies == [f"body-{d}".encode() * 20 for d in sorted(delays)]


def _churn(vh: VirtualHost, log: DiskDurableLog, rounds: int) -> None:
    """Several segments of 4096 bytes, all dead once purged (reclaimed at commit)."""
    raw = BasicProperties(delivery_mode=2).encode()
    for _ in range(rounds):
        for _ in range(8):
            queues, message = vh.route_message("", Message("", "other", raw, b"z" * 1000), 1.0)
            assert enqueue_routed(log, "/", message, queues, 1.0)
        vh.purge_queue("other")
        log.commit()
        vh.tick(1.0)


def test_paged_out_messages_survive_reclamation_of_the_segments_around_them() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    _setup(vh)
    vh.declare_queue("other", durable=True)
    _churn(vh, log, 2)  # the held message's record goes into a later segment
    _publish(vh, 60_000, b"kept" * 300)
    (held,) = _held(vh)
    segment = f"{held.where >> 40:08d}.seg"
    _churn(vh, log, 6)
    assert _paged_out(held)
    names = files.list()
    assert segment in names and segment != "00000001.seg"
    assert len(names) < int(max(names)[:8])  # segments around it were reclaimed
    vh.tick(61.0)  # held at 1.0 (the churn's ticks moved the clock)
    assert [m.body for m in _drain(vh, 61.0)] == [b"kept" * 300]


def test_a_restart_rebuilds_the_schedule_without_reading_a_body() -> None:
    files = FakeFiles()
    broker, log = _start(files)
    vh = broker.vhosts["/"]
    _setup(vh)
    for i in range(20):
        _publish(vh, 1000 * (20 - i), f"m{i}".encode() * 50, delivery_mode=2)
    _publish(vh, 500, b"")  # an empty body pages out too: its properties are in the log
    log.commit()
    files.crash()

    broker, log = _start(files)
    vh = broker.vhosts["/"]
    vh.tick(0.0)  # schedules what was restored
    assert len(vh.delayed) == 21
    assert log.bodies.reads == 0
    assert sum(_paged_out(h) for h in _held(vh)) == 21
    vh.tick(100.0)
    bodies = [m.body for m in _drain(vh, 100.0)]
    assert bodies == [b""] + [f"m{i}".encode() * 50 for i in reversed(range(20))]
    assert log.bodies.reads >= 1


def test_a_transient_delayed_exchange_keeps_its_messages_as_they_are() -> None:
    broker, log = _start(FakeFiles())
    vh = broker.vhosts["/"]
    _setup(vh, durable=False)
    _publish(vh, 5000, b"mem")
    log.commit()
    vh.tick(1.0)
    (held,) = _held(vh)
    assert isinstance(held, Message) and held.body == b"mem"
