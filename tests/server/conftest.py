"""A fake session Connection speaking a tiny line protocol, and an in-memory listener.

The server only relies on the Connection contract in docs/internals.md; this fake implements
exactly that contract so the server's I/O behaviour (batching, wake-ups, timers, faults,
shutdown) is tested without the real session. Commands, one per line:

    echo TEXT      reply TEXT
    pub ID TEXT    queue TEXT on connection ID and call its on_output (a delivery)
    hb SECONDS     want tick() every SECONDS from now
    stuck          next_deadline() stays in the past after tick (a buggy connection)
    boom           receive_data raises
    tickboom       the next tick raises
    close          reply "bye" and become closed (a connection.close-ok)
    close-ok       after shutdown(): become closed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from amqpd.server import Server, ServerConfig


class FakeConnection:
    def __init__(self, now: float, peer: str | None, registry: dict[int, FakeConnection]) -> None:
        self.id = len(registry) + 1
        registry[self.id] = self
        self.registry = registry
        self.created = now
        self.peer = peer
        self.on_output: Callable[[], None] | None = None
        self.closed = False
        self.outbox = bytearray()
        self.inbuf = b""
        self.received: list[bytes] = []
        self.deadline: float | None = None
        self.interval: float | None = None
        self.ticks: list[float] = []
        self.tick_raises = False
        self.stuck = False
        self.shutting_down = False
        self.lost = 0
        self.eof = False
        self.data_to_send_calls = 0

    def receive_data(self, data: bytes, now: float) -> None:
        self.received.append(data)
        if not data:
            self.eof = True
            return
        self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            self._command(line.decode(), now)

    def _command(self, line: str, now: float) -> None:
        verb, _, rest = line.partition(" ")
        if verb == "echo":
            self.outbox += rest.encode() + b"\n"
        elif verb == "pub":
            target_id, _, text = rest.partition(" ")
            target = self.registry[int(target_id)]
            target.outbox += text.encode() + b"\n"
            if target.on_output is not None:
                target.on_output()
        elif verb == "hb":
            self.interval = float(rest)
            self.deadline = now + self.interval
        elif verb == "stuck":
            self.stuck = True
            self.deadline = now
        elif verb == "boom":
            raise RuntimeError("boom")
        elif verb == "tickboom":
            self.tick_raises = True
        elif verb == "close":
            self.outbox += b"bye\n"
            self.closed = True
        elif verb == "close-ok" and self.shutting_down:
            self.closed = True

    def data_to_send(self) -> bytes:
        self.data_to_send_calls += 1
        out = bytes(self.outbox)
        self.outbox.clear()
        return out

    def next_deadline(self) -> float | None:
        return self.deadline

    def tick(self, now: float) -> None:
        if self.tick_raises:
            raise RuntimeError("tick boom")
        self.ticks.append(now)
        self.outbox += b"tick\n"
        if self.interval is not None and not self.stuck:
            assert self.deadline is not None
            self.deadline += self.interval

    def shutdown(self, now: float) -> None:
        self.shutting_down = True
        self.outbox += b"close 320\n"

    def connection_lost(self) -> None:
        self.lost += 1


class CountingStream(trio.abc.Stream):
    """The server's end of a memory stream; counts send_all calls and can hold them."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends: list[bytes] = []
        self.gate: trio.Event | None = None
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data))
        if self.gate is not None:
            await self.gate.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)
        self.server_streams: list[CountingStream] = []

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        counting = CountingStream(server)
        self.server_streams.append(counting)
        await self._send.send(counting)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()


@attrs.define
class Harness:
    server: Server
    listener: MemoryListener
    conns: dict[int, FakeConnection]
    factory_box: dict[str, Any]

    async def connect(self) -> tuple[trio.abc.Stream, FakeConnection]:
        """Open a client stream and wait until the server has made its connection."""
        before = len(self.conns)
        client = await self.listener.connect()
        with trio.fail_after(60):
            while len(self.conns) == before:
                await trio.sleep(0)  # a checkpoint, not a sleep: lets the accept loop run
        return client, self.conns[before + 1]

    @staticmethod
    async def read_until(stream: trio.abc.Stream, expected: bytes) -> bytes:
        """Read until ``expected`` arrives; return all read. Fail on EOF or after 60 s."""
        got = bytearray()
        with trio.fail_after(60):
            while expected not in got:
                chunk = await stream.receive_some()
                if not chunk:
                    raise AssertionError(f"EOF before {expected!r}; got {bytes(got)!r}")
                got += chunk
        return bytes(got)

    @staticmethod
    async def read_to_eof(stream: trio.abc.Stream) -> bytes:
        got = bytearray()
        with trio.fail_after(60):
            while chunk := await stream.receive_some():
                got += chunk
        return bytes(got)


def make_harness(shutdown_grace: float = 2.0) -> Harness:
    listener = MemoryListener()
    conns: dict[int, FakeConnection] = {}
    box: dict[str, Any] = {}

    def factory(now: float, peer: str | None) -> FakeConnection:
        if box.get("fail"):
            raise RuntimeError("factory failed")
        return FakeConnection(now, peer, conns)

    server = Server([listener], factory, config=ServerConfig(shutdown_grace=shutdown_grace))
    return Harness(server, listener, conns, box)


@pytest.fixture
def harness_factory() -> Callable[..., Harness]:
    """For tests that run the server in their own nursery (to see ``run`` return)."""
    return make_harness


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    h = make_harness()
    await nursery.start(h.server.run)
    return h


@pytest.fixture
def fake_connections() -> tuple[Callable[[float, str | None], FakeConnection], dict[int, Any]]:
    """A connection factory making FakeConnections, and the dict they register in."""
    conns: dict[int, FakeConnection] = {}
    return (lambda now, peer: FakeConnection(now, peer, conns)), conns


class FrameClient:
    """The client end of a memory stream, speaking AMQP frames with pika's own codec."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""

    async def next_frame(self) -> Any:
        """The next frame from the server; None at EOF."""
        from pika import frame as pframe

        while True:
            consumed, frame = pframe.decode_frame(self.buf)
            if frame is not None:
                self.buf = self.buf[consumed:]
                return frame
            chunk = await self.stream.receive_some()
            if not chunk:
                return None
            self.buf += chunk

    async def send(self, channel: int, method: Any) -> None:
        from pika import frame as pframe

        await self.stream.send_all(pframe.Method(channel, method).marshal())

    async def handshake(self, heartbeat: int = 0) -> None:
        """Protocol header to connection.open-ok, as guest on vhost "/"."""
        from pika import spec

        await self.stream.send_all(b"AMQP\x00\x00\x09\x01")
        assert isinstance((await self.next_frame()).method, spec.Connection.Start)
        await self.send(0, spec.Connection.StartOk({}, "PLAIN", b"\0guest\0guest", "en_US"))
        assert isinstance((await self.next_frame()).method, spec.Connection.Tune)
        tune_ok = spec.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=heartbeat)
        await self.send(0, tune_ok)
        await self.send(0, spec.Connection.Open("/"))
        assert isinstance((await self.next_frame()).method, spec.Connection.OpenOk)
