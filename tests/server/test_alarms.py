"""Resource alarms end to end: pika publishers get connection.blocked / unblocked.

The measurement source is a fake the test controls (no real memory pressure); the monitor
polls it on its interval. pika runs in a worker thread; every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pika
import pika.exceptions
import trio

from amqpd.broker.alarms import Alarms
from amqpd.broker.broker import Broker
from amqpd.server import ListenAddress, Server, ServerConfig, open_listeners
from amqpd.server.resources import Measurement, run_resource_monitor
from amqpd.server.server import session_connection_factory
from amqpd.session.config import ConnectionConfig

T = TypeVar("T")


class FakeMeasure:
    """The monitor's measurement source; ``seen`` is set once it has measured ``wanted``."""

    def __init__(self) -> None:
        self.memory_used = 100
        self.disk_free = 10**9
        self.seen = threading.Event()
        self.wanted: tuple[int, int] | None = None

    def expect(self, memory_used: int, disk_free: int) -> None:
        self.seen.clear()
        self.wanted = (memory_used, disk_free)
        self.memory_used, self.disk_free = memory_used, disk_free

    def __call__(self) -> Measurement:
        # The monitor applies the alarm in the same trio step, before the server reads any
        # socket again: a client that saw ``seen`` set may rely on the alarm being on.
        if self.wanted == (self.memory_used, self.disk_free):
            self.seen.set()
        return Measurement(self.memory_used, self.disk_free)


async def in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


def _until(conn: pika.BlockingConnection, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"no {what} within 10 s"
        conn.process_data_events(time_limit=0.05)


async def test_publishers_are_blocked_during_an_alarm_and_consumers_keep_consuming() -> None:
    broker = Broker()
    measure = FakeMeasure()
    alarms = Alarms(memory_limit=1000, disk_free_limit=50_000_000)
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    server = Server(listeners, session_connection_factory(broker), config=ServerConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        nursery.start_soon(lambda: run_resource_monitor(alarms, server, measure, interval=0.01))
        host, port = server.addresses[0].rsplit(":", 1)
        params = pika.URLParameters(f"amqp://guest:guest@{host}:{port}/%2F")
        params.socket_timeout = 10

        def scenario() -> dict[str, Any]:
            events: list[str] = []
            publisher = pika.BlockingConnection(params)
            consumer = pika.BlockingConnection(params)
            publisher.add_on_connection_blocked_callback(
                lambda _c, frame: events.append(frame.method.reason)
            )
            publisher.add_on_connection_unblocked_callback(
                lambda _c, _frame: events.append("unblocked")
            )
            pch = publisher.channel()
            cch = consumer.channel()
            cch.queue_declare("alarmed")
            measure.expect(5000, 10**9)  # over the watermark
            assert measure.seen.wait(10)
            pch.basic_publish("", "alarmed", b"m1")  # the publish that gets it blocked
            _until(publisher, lambda: bool(events), "connection.blocked")
            pch.basic_publish("", "alarmed", b"m2")  # sent, but not read while blocked
            # A consuming connection is never blocked: it still gets what arrived. The
            # block starts at m1's content header (rabbit_reader blocks on the publish,
            # at a frame boundary): if m1's body came in a later TCP read, it is read
            # only after the alarm too, so m1 may or may not be there yet; m2 never is.
            _method, _props, body = cch.basic_get("alarmed", auto_ack=True)
            got = [body] if body is not None else []
            queued_while_blocked = broker.vhosts["/"].queues["alarmed"].message_count
            measure.memory_used = 100  # the alarm clears
            _until(publisher, lambda: "unblocked" in events, "connection.unblocked")
            _until(
                consumer,
                lambda: broker.vhosts["/"].queues["alarmed"].message_count == 2 - len(got),
                "m2 after unblocking",
            )
            while (body := cch.basic_get("alarmed", auto_ack=True)[2]) is not None:
                got.append(body)
            publisher.close()
            consumer.close()
            return {
                "events": events,
                "got": got,
                "queued_while_blocked": queued_while_blocked,
            }

        result = await in_thread(scenario)
        nursery.cancel_scope.cancel()
    assert result == {
        "events": ["low on memory", "unblocked"],
        "got": [b"m1", b"m2"],
        "queued_while_blocked": 0,
    }


async def test_a_connection_opened_during_an_alarm_is_blocked_when_it_publishes() -> None:
    measure = FakeMeasure()
    measure.expect(100, 1)
    alarms = Alarms(memory_limit=None, disk_free_limit=50_000_000)
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    server = Server(listeners, session_connection_factory(Broker()), config=ServerConfig())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        nursery.start_soon(lambda: run_resource_monitor(alarms, server, measure, interval=0.01))
        host, port = server.addresses[0].rsplit(":", 1)
        params = pika.URLParameters(f"amqp://guest:guest@{host}:{port}/%2F")
        params.socket_timeout = 10

        def scenario() -> list[str]:
            assert measure.seen.wait(10)
            events: list[str] = []
            publisher = pika.BlockingConnection(params)
            publisher.add_on_connection_blocked_callback(
                lambda _c, frame: events.append(frame.method.reason)
            )
            publisher.channel().basic_publish("", "nowhere", b"x")
            _until(publisher, lambda: bool(events), "connection.blocked")
            measure.disk_free = 10**9
            publisher.add_on_connection_unblocked_callback(
                lambda _c, _frame: events.append("unblocked")
            )
            _until(publisher, lambda: "unblocked" in events, "connection.unblocked")
            publisher.close()
            return events

        assert await in_thread(scenario) == ["low on disk", "unblocked"]
        nursery.cancel_scope.cancel()


async def test_a_blocked_connection_still_gets_its_close_ok_in_at_shutdown() -> None:
    measure = FakeMeasure()
    measure.expect(5000, 10**9)
    alarms = Alarms(memory_limit=1000, disk_free_limit=None)
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    # A long grace: the shutdown must finish because the close-ok was read, not time out.
    config = ServerConfig(shutdown_grace=60, connection=ConnectionConfig(shutdown_timeout=60))
    factory = session_connection_factory(Broker(), config.connection)
    server = Server(listeners, factory, config=config)
    blocked = threading.Event()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        await server.run(task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        nursery.start_soon(lambda: run_resource_monitor(alarms, server, measure, interval=0.01))
        host, port = server.addresses[0].rsplit(":", 1)
        params = pika.URLParameters(f"amqp://guest:guest@{host}:{port}/%2F")
        params.socket_timeout = 10

        def scenario() -> int:
            assert measure.seen.wait(10)
            publisher = pika.BlockingConnection(params)
            publisher.add_on_connection_blocked_callback(lambda _c, _f: blocked.set())
            publisher.channel().basic_publish("", "nowhere", b"x")
            _until(publisher, blocked.is_set, "connection.blocked")
            try:
                _until(publisher, lambda: False, "connection.close")
            except pika.exceptions.ConnectionClosedByBroker as exc:
                return int(exc.reply_code)
            return 0

        async def shut_down_once_blocked() -> None:
            await trio.to_thread.run_sync(blocked.wait, 10)
            server.shutdown()

        nursery.start_soon(shut_down_once_blocked)
        with trio.fail_after(20):
            assert await in_thread(scenario) == 320
            await stopped.wait()  # the close-ok was read: no waiting out the grace period
        nursery.cancel_scope.cancel()
