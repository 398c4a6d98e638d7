"""pika against an in-process server on a real loopback socket: the layers put together.

pika's BlockingConnection is synchronous, so each client runs in a worker thread while the
server runs in the test's trio loop. Every wait is bounded (pika timeouts, trio.fail_after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pika
import pika.exceptions
import pytest
import trio
import trio.testing
from pika import frame as pframe

from amqpd.broker.broker import Broker
from amqpd.server import ListenAddress, Server, ServerConfig, open_listeners, serve
from amqpd.server.connection_task import ConnectionTask
from amqpd.server.server import session_connection_factory
from amqpd.session.connection import Connection

from .conftest import FrameClient

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    return await nursery.start(serve, Broker(), listeners)  # type: ignore[no-any-return]


def _params(server: Server) -> pika.URLParameters:
    host, port = server.addresses[0].rsplit(":", 1)
    params = pika.URLParameters(f"amqp://guest:guest@{host}:{port}/%2F")
    params.socket_timeout = 10
    params.blocked_connection_timeout = 10
    return params


async def test_publish_get_and_consume_across_connections(server: Server) -> None:
    def scenario() -> list[bytes]:
        consumer_conn = pika.BlockingConnection(_params(server))
        publisher_conn = pika.BlockingConnection(_params(server))
        try:
            consumer = consumer_conn.channel()
            consumer.queue_declare("e2e", auto_delete=True)
            publisher = publisher_conn.channel()
            publisher.confirm_delivery()
            for i in range(3):
                publisher.basic_publish("", "e2e", f"m{i}".encode())
            got: list[bytes] = []
            for _method, _props, body in consumer.consume("e2e", inactivity_timeout=10):
                assert body is not None, "no delivery within 10 s"
                got.append(body)
                if len(got) == 3:
                    break
            consumer.cancel()
            return got
        finally:
            publisher_conn.close()
            consumer_conn.close()

    assert await in_thread(scenario) == [b"m0", b"m1", b"m2"]


async def test_shutdown_sends_320_to_a_connected_client() -> None:
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    server = Server(
        listeners, session_connection_factory(Broker()), config=ServerConfig(shutdown_grace=5)
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            conn = await in_thread(lambda: pika.BlockingConnection(_params(server)))
            server.shutdown()

            def wait_for_close() -> Any:
                with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
                    for _ in range(10):
                        conn.process_data_events(time_limit=1)
                return info.value

            closed = await in_thread(wait_for_close)
        # Leaving the nursery means server.run() returned: the shutdown completed.
    assert closed.reply_code == 320
    assert closed.reply_text == (
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    )


async def test_heartbeats_and_heartbeat_timeout_on_virtual_time(autojump_clock) -> None:
    """The real session over a memory stream: the timer task drives its heartbeats."""
    client, server_stream = trio.testing.memory_stream_pair()
    conn = Connection(Broker(), now=trio.current_time(), peer=None)
    task = ConnectionTask(server_stream, conn, conn_id=1, peer=None)
    amqp = FrameClient(client)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task.run)
        await amqp.handshake(heartbeat=4)
        opened = trio.current_time()
        # The client now stays silent: the server keeps sending heartbeats until it decides
        # the client is dead and hangs up.
        heartbeats = 0
        with trio.fail_after(120):
            while (frame := await amqp.next_frame()) is not None:
                if isinstance(frame, pframe.Heartbeat):
                    heartbeats += 1
        silent_for = trio.current_time() - opened
    # The exact schedule is the session's business (tested there); here: the timer ran it.
    assert heartbeats >= 2
    assert 4 <= silent_for <= 20
