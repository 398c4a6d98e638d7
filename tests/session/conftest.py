"""Shared helpers for session tests: a fake broker and channel, and a pika-speaking client.

The client encodes and decodes frames with ``pika`` (its own AMQP codec), so connection
tests do not depend on our protocol layer agreeing with itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pika.frame
import pika.spec
import pytest

from amqpd.errors import NotAllowed
from amqpd.protocol import methods as M
from amqpd.protocol.assembler import Command
from amqpd.session.config import ConnectionConfig
from amqpd.session.connection import Connection

HEADER_091 = b"AMQP\x00\x00\x09\x01"
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


@attrs.define
class FakeUser:
    name: str
    tags: tuple[str, ...] = ()
    loopback_only: bool = False


@attrs.define
class FakeVhost:
    name: str
    closed_owners: list[object] = attrs.field(factory=list)

    def connection_closed(self, owner: object) -> None:
        self.closed_owners.append(owner)


class FakeBroker:
    """``broker.vhosts`` and ``broker.authenticate`` as docs/internals.md describes them."""

    def __init__(self) -> None:
        self.vhosts: dict[str, FakeVhost] = {"/": FakeVhost("/"), "other": FakeVhost("other")}
        self.open_owners: list[object] = []
        self.closed_connections: list[object] = []
        self.users = {
            "guest": ("guest", FakeUser("guest", ("administrator",), loopback_only=True)),
            "bob": ("secret", FakeUser("bob")),
        }

    def authenticate(self, username: str, password: str) -> FakeUser | None:
        entry = self.users.get(username)
        if entry is None or entry[0] != password:
            return None
        return entry[1]

    def open_connection(self, owner: object, user: FakeUser, vhost: str) -> tuple[FakeVhost, None]:
        found = self.vhosts.get(vhost)
        if found is None:
            raise NotAllowed(f"vhost {vhost} not found")
        self.open_owners.append(owner)
        return found, None

    def check_channel_open(self, owner: object, user: str) -> None:
        pass

    def close_connection(self, owner: object) -> None:
        self.closed_connections.append(owner)


class FakeChannel:
    """Stands in for amqpd.session.channel.Channel: records, and raises on request."""

    instances: list[FakeChannel] = []

    def __init__(self, conn: Connection, number: int) -> None:
        self.conn = conn
        self.number = number
        self.commands: list[Command] = []
        self.closed = 0
        self.closed_at: float | None = None
        self.flushes = 0
        self.raise_next: BaseException | None = None
        FakeChannel.instances.append(self)

    def handle(self, cmd: Command, now: float) -> None:
        self.commands.append(cmd)
        if self.raise_next is not None:
            err, self.raise_next = self.raise_next, None
            raise err
        if isinstance(cmd.method, M.BasicQos):
            self.conn.send_method(self.number, M.BasicQosOk())

    def on_closed(self, now: float | None = None) -> None:
        self.closed += 1
        self.closed_at = now

    def flush(self) -> None:
        self.flushes += 1


def encode(channel: int, method: Any) -> bytes:
    """A method frame built by pika."""
    return bytes(pika.frame.Method(channel, method).marshal())


def content(channel: int, body: bytes, props: pika.spec.BasicProperties | None = None) -> bytes:
    """Content header + one body frame, built by pika."""
    props = props or pika.spec.BasicProperties()
    frames = pika.frame.Header(channel, len(body), props).marshal()
    if body:
        frames += pika.frame.Body(channel, body).marshal()
    return bytes(frames)


def decode_all(data: bytes) -> list[Any]:
    """Server output → pika frames (ProtocolHeader, Method, Header, Body, Heartbeat)."""
    frames: list[Any] = []
    while data:
        consumed, frame = pika.frame.decode_frame(data)
        assert frame is not None, f"incomplete frame in server output: {data[:40]!r}"
        frames.append(frame)
        data = data[consumed:]
    return frames


class Client:
    """Drives a ``Connection`` the way a client would, reading replies with pika."""

    def __init__(
        self,
        *,
        now: float = 0.0,
        peer: str | None = None,
        config: ConnectionConfig | None = None,
        broker: FakeBroker | None = None,
    ) -> None:
        self.broker = broker if broker is not None else FakeBroker()
        self.now = now
        self.conn = Connection(
            self.broker, now=now, peer=peer, config=config, channel_factory=FakeChannel
        )

    # Raw I/O.
    def feed(self, data: bytes, at: float | None = None) -> list[Any]:
        if at is not None:
            self.now = at
        self.conn.receive_data(data, self.now)
        return self.read()

    def read(self) -> list[Any]:
        return decode_all(self.conn.data_to_send())

    def tick(self, at: float) -> list[Any]:
        self.now = at
        self.conn.tick(at)
        return self.read()

    def send(self, channel: int, method: Any, at: float | None = None) -> list[Any]:
        return self.feed(encode(channel, method), at)

    def methods(self, channel: int, method: Any) -> list[Any]:
        """Send one method; return the reply methods (pika method objects)."""
        return [f.method for f in self.send(channel, method)]

    # Handshake steps.
    def start_ok(
        self,
        response: bytes = b"\0guest\0guest",
        mechanism: str = "PLAIN",
        capabilities: dict[str, Any] | None = None,
    ) -> list[Any]:
        props = {"product": "test", "capabilities": capabilities or {}}
        return self.send(0, pika.spec.Connection.StartOk(props, mechanism, response))

    def handshake(
        self,
        *,
        capabilities: dict[str, Any] | None = None,
        heartbeat: int = 0,
        channel_max: int = 2047,
        frame_max: int = 131072,
        vhost: str = "/",
    ) -> Client:
        frames = self.feed(HEADER_091)
        assert isinstance(frames[0].method, pika.spec.Connection.Start)
        frames = self.start_ok(capabilities=capabilities)
        assert isinstance(frames[0].method, pika.spec.Connection.Tune), frames
        assert self.send(0, pika.spec.Connection.TuneOk(channel_max, frame_max, heartbeat)) == []
        frames = self.send(0, pika.spec.Connection.Open(vhost))
        assert isinstance(frames[0].method, pika.spec.Connection.OpenOk), frames
        return self

    def open_channel(self, number: int = 1) -> FakeChannel:
        replies = self.methods(number, pika.spec.Channel.Open())
        assert [type(m) for m in replies] == [pika.spec.Channel.OpenOk], replies
        channel = self.conn.channels[number]
        assert isinstance(channel, FakeChannel)
        return channel


def close_of(frames: list[Any]) -> tuple[int, str, int, int]:
    """The (code, text, class_id, method_id) of the single Close frame in ``frames``."""
    closes = [
        f.method
        for f in frames
        if isinstance(f, pika.frame.Method)
        and isinstance(f.method, pika.spec.Connection.Close | pika.spec.Channel.Close)
    ]
    assert len(closes) == 1, frames
    m = closes[0]
    return m.reply_code, m.reply_text, m.class_id, m.method_id


@pytest.fixture(autouse=True)
def _reset_fake_channels() -> Iterator[None]:
    FakeChannel.instances.clear()
    yield
    FakeChannel.instances.clear()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def running() -> Client:
    """A client past connection.open-ok on vhost "/" (no heartbeats)."""
    return Client().handshake()
