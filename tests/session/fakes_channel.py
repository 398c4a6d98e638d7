"""A small real stand-in for the Connection side of the Channel contract, for channel tests.

It holds what ``Channel`` reads (broker, vhost, user, frame_max, config, capabilities),
collects what it writes, and parses the written bytes back into commands with the protocol
layer's own reader and assembler, so tests assert on exactly what would go on the wire.
"""

from __future__ import annotations

from typing import Any

import attrs

from amqpd.broker.broker import Broker
from amqpd.broker.permissions import Access
from amqpd.errors import AMQPError
from amqpd.protocol.assembler import Command, CommandAssembler
from amqpd.protocol.frames import FrameReader, encode_method_frame
from amqpd.protocol.methods import Method
from amqpd.protocol.properties import BasicProperties
from amqpd.session.channel import Channel


@attrs.define
class FakeConfig:
    max_message_size: int = 134217728


@attrs.define
class FakeUser:
    name: str = "guest"


class FakeConnection:
    def __init__(
        self,
        broker: Broker | None = None,
        *,
        capabilities: dict[str, Any] | None = None,
        frame_max: int = 131072,
        user: str = "guest",
    ) -> None:
        self.broker = broker if broker is not None else Broker()
        self.vhost = self.broker.vhosts["/"]
        # Channel tests are not about permissions: guest's full access to "/".
        self.access = Access(self.broker.permissions, "guest", "/")
        self.user = FakeUser(user)
        self.frame_max = frame_max
        self.config = FakeConfig()
        self.capabilities = capabilities if capabilities is not None else {}
        self.out = bytearray()
        self.pending: list[Command] = []  # parsed but handed back by a helper (``unread``)
        self.channels: dict[int, Channel] = {}
        self.now = 0.0  # what ``call`` passes to Channel.handle; tests move it forward

    # The Connection side of the contract.
    def send(self, data: bytes) -> None:
        self.out += data

    def send_method(self, channel_number: int, method: Method) -> None:
        self.out += encode_method_frame(channel_number, method)

    # Test helpers.
    def open(self, number: int = 1) -> Channel:
        ch = Channel(self, number)
        self.channels[number] = ch
        return ch

    def call(
        self,
        ch: Channel,
        method: Method,
        props: BasicProperties | bytes | None = None,
        body: bytes | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """Feed one command to ``ch`` as the Connection would; flush like end-of-chunk."""
        if method.HAS_CONTENT:
            raw = props.encode() if isinstance(props, BasicProperties) else props
            cmd = Command(method, raw if raw is not None else b"\x00\x00", body or b"")
        else:
            cmd = Command(method)
        ch.handle(cmd, self.now)
        if flush:
            ch.flush()

    def fails(self, ch: Channel, method: Method, *args: Any, **kw: Any) -> AMQPError:
        """Like ``call`` but expects an AMQPError, and closes the channel as the Connection
        would (on_closed) when it is a channel error."""
        try:
            self.call(ch, method, *args, **kw)
        except AMQPError as exc:
            ch.on_closed()
            return exc
        raise AssertionError(f"{method!r} did not fail")

    def take(self) -> list[Command]:
        """Everything written since the last take, as (channel-agnostic) commands."""
        data, self.out = bytes(self.out), bytearray()
        reader = FrameReader(0)
        reader.feed(data)
        assemblers: dict[int, CommandAssembler] = {}
        commands, self.pending = self.pending, []
        while (frame := reader.next_frame()) is not None:
            asm = assemblers.setdefault(frame.channel, CommandAssembler(1 << 30))
            command = asm.feed(frame)
            if command is not None:
                commands.append(command)
        assert reader.buffered == 0
        return commands

    def unread(self, commands: list[Command]) -> None:
        """Give commands back to the next ``take``."""
        self.pending = commands + self.pending

    def methods(self) -> list[Method]:
        return [c.method for c in self.take()]
