"""The broker timer task on virtual time (autojump_clock): TTL at the head and x-expires run
when due, an earlier deadline wakes the timer, and a tick's deliveries reach the client."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from pika import frame as pframe
from pika import spec

from amqpd.broker.broker import Broker
from amqpd.broker.message import Message
from amqpd.protocol.properties import BasicProperties
from amqpd.server.broker_timer import BrokerTimer
from amqpd.server.connection_task import ConnectionTask
from amqpd.session.connection import Connection

from .conftest import FrameClient


class FakeBroker:
    def __init__(self) -> None:
        self.on_deadline_moved: Any = None
        self.deadline: float | None = None
        self.ticks: list[float] = []
        self.raises = False

    def next_deadline(self) -> float | None:
        return self.deadline

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.deadline = None
        if self.raises:
            raise RuntimeError("tick boom")


async def test_sleeps_until_the_deadline_and_an_earlier_one_wakes_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = FakeBroker()
    start = trio.current_time()
    broker.deadline = start + 100
    nursery.start_soon(BrokerTimer(broker).run)
    await trio.sleep(1)
    assert broker.on_deadline_moved is not None and broker.ticks == []
    broker.deadline = start + 5
    broker.on_deadline_moved()
    await trio.sleep(10)
    assert broker.ticks == [start + 5]


async def test_a_failing_tick_is_logged_and_the_timer_goes_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = FakeBroker()
    broker.raises = True
    broker.deadline = trio.current_time() + 1
    nursery.start_soon(BrokerTimer(broker).run)
    await trio.sleep(2)
    broker.raises = False
    broker.deadline = trio.current_time() + 1
    broker.on_deadline_moved()
    await trio.sleep(2)
    assert len(broker.ticks) == 2


async def test_real_broker_ttl_and_expires_on_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    broker = Broker(wall_clock=lambda: 0.0)
    vh = broker.vhosts["/"]
    nursery.start_soon(BrokerTimer(broker).run)
    await trio.sleep(0)
    t0 = trio.current_time()
    vh.declare_queue("dlq")
    vh.declare_queue(
        "src",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"},
        now=t0,
    )
    vh.declare_queue("tmp", arguments={"x-expires": 30_000}, now=t0)
    props = BasicProperties(expiration="60000").encode()
    vh.queues["src"].enqueue(Message("", "src", props, b"late"), now=t0)
    props = BasicProperties(expiration="5000").encode()
    vh.queues["src"].enqueue(Message("", "src", props, b"behind"), now=t0)  # not at the head
    await trio.sleep(29)
    assert "tmp" in vh.queues
    await trio.sleep(2)
    assert "tmp" not in vh.queues
    assert vh.queues["dlq"].message_count == 0  # "behind" waits behind "late"
    await trio.sleep(30)
    assert vh.queues["dlq"].message_count == 2  # both, once "late" expired at t0 + 60
    assert broker.next_deadline() is None


async def test_dead_lettered_delivery_from_a_tick_reaches_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Real session over a memory stream: a message expires on the timer, is dead-lettered
    into a queue this connection consumes, and the deliver frame is written out."""
    broker = Broker(wall_clock=lambda: 1_700_000_000.0)
    client, server_stream = trio.testing.memory_stream_pair()
    conn = Connection(broker, now=trio.current_time(), peer=None)
    task = ConnectionTask(server_stream, conn, conn_id=1, peer=None)
    amqp = FrameClient(client)
    next_frame, send = amqp.next_frame, amqp.send

    async with trio.open_nursery() as nursery:
        nursery.start_soon(BrokerTimer(broker).run)
        nursery.start_soon(task.run)
        await amqp.handshake()
        await send(1, spec.Channel.Open())
        assert isinstance((await next_frame()).method, spec.Channel.OpenOk)
        await send(1, spec.Queue.Declare(queue="dlq"))
        assert isinstance((await next_frame()).method, spec.Queue.DeclareOk)
        args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
        await send(1, spec.Queue.Declare(queue="src", arguments=args))
        assert isinstance((await next_frame()).method, spec.Queue.DeclareOk)
        await send(1, spec.Basic.Consume(queue="dlq", consumer_tag="dl", no_ack=True))
        assert isinstance((await next_frame()).method, spec.Basic.ConsumeOk)
        published = trio.current_time()
        body = b"ttl"
        props = spec.BasicProperties(expiration="5000")
        await client.send_all(
            pframe.Method(1, spec.Basic.Publish(exchange="", routing_key="src")).marshal()
            + pframe.Header(1, len(body), props).marshal()
            + pframe.Body(1, body).marshal()
        )
        with trio.fail_after(60):
            deliver = await next_frame()
            header = await next_frame()
            content = await next_frame()
        assert isinstance(deliver.method, spec.Basic.Deliver)
        assert deliver.method.routing_key == "dlq" and content.fragment == body
        assert header.properties.expiration is None
        [death] = header.properties.headers["x-death"]
        assert death["reason"] == b"expired" or death["reason"] == "expired"
        assert 5 <= trio.current_time() - published < 5.5
        nursery.cancel_scope.cancel()
