"""Write-through (server/connection_task.py rules): output queued during a reader step is
sent by that reader right after the step, on real sockets, without reordering anything."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from amqpd.server import connection_task
from amqpd.server.connection_task import ConnectionTask
from tests.server.conftest import FakeConnection


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def _read_lines(stream: trio.SocketStream, count: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < count:
        data = await stream.receive_some(65536)
        assert data, "closed early"
        buf += data
    return buf.split(b"\n")[:count]


class Writes:
    """What the write-through asked os.write to send, and what the socket left over."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.left: list[int] = []


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    seen = Writes()
    real_write = os.write  # the real one still does the work

    def write(fd: int, data: bytes) -> int:
        seen.sizes.append(len(data))
        taken = 0
        try:
            taken = real_write(fd, data)
        finally:
            if taken < len(data):
                seen.left.append(len(data) - taken)
        return taken

    monkeypatch.setattr(connection_task.os, "write", write)
    return seen


async def _serve(
    nursery: trio.Nursery, registry: dict[int, FakeConnection]
) -> list[trio.SocketStream]:
    clients = []
    for conn_id in (1, 2):
        server_end, client_end = await _pair()
        conn = FakeConnection(0.0, None, registry)
        task = ConnectionTask(server_end, conn, conn_id=conn_id, peer=None)
        nursery.start_soon(task.run)
        clients.append(client_end)
    return clients


async def test_a_delivery_goes_out_from_the_publishers_step(writes: Writes) -> None:
    registry: dict[int, FakeConnection] = {}
    async with trio.open_nursery() as nursery:
        publisher, consumer = await _serve(nursery, registry)
        await publisher.send_all(b"pub 2 one\npub 2 two\n")
        assert await _read_lines(consumer, 2) == [b"one", b"two"]
        # both in one write, by the publisher's reader (the consumer's writer did nothing)
        assert sum(writes.sizes) == len(b"one\ntwo\n")
        nursery.cancel_scope.cancel()


async def test_what_the_socket_does_not_take_goes_next_and_in_order(writes: Writes) -> None:
    registry: dict[int, FakeConnection] = {}
    count = 4000
    async with trio.open_nursery() as nursery:
        publisher, consumer = await _serve(nursery, registry)
        line = "x" * 1000
        # ~4 MB for a consumer that reads nothing yet: far beyond the socket buffers, so
        # write-throughs are partial or refused and the writer carries the rest.
        payload = b"".join(f"pub 2 {i:05d}{line}\n".encode() for i in range(count))
        nursery.start_soon(publisher.send_all, payload)
        await trio.testing.wait_all_tasks_blocked()  # the consumer's socket is full now
        lines = await _read_lines(consumer, count)
        assert [int(x[:5]) for x in lines] == list(range(count))
        assert all(x[5:] == line.encode() for x in lines)
        assert writes.sizes  # the write-through took part...
        assert writes.left  # ...and the socket refused some, which the writer then sent
        nursery.cancel_scope.cancel()


async def test_a_closed_socket_is_never_written_through(writes: Writes) -> None:
    registry: dict[int, FakeConnection] = {}
    server_end, client_end = await _pair()
    conn = FakeConnection(0.0, None, registry)
    task = ConnectionTask(server_end, conn, conn_id=1, peer=None)
    await server_end.aclose()  # its number may be reused by another socket now
    conn.outbox += b"late\n"
    task._write_through()
    assert writes.sizes == []
    await client_end.aclose()
