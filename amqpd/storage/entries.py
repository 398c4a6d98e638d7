"""The record kinds of the durable broker log and their payload encodings.

Rules of this module (docs/storage.md "Record kinds"):
- One frozen attrs class per kind, with ``KIND`` (the record's kind byte, never reused or
  renumbered: it is the on-disk format) and ``encode() -> bytes``; ``decode_entry(kind,
  payload)`` is the inverse and raises ``ValueError`` for a payload it cannot read.
- Strings are u16 length + UTF-8, byte strings u32 length + bytes, integers little-endian,
  field tables in AMQP encoding (protocol/fieldtable.py), so arguments come back exactly
  as declared (width types included).
- Only durable things are logged: durable exchanges and queues, bindings between durable
  ends, persistent messages on durable queues. Which queues a message is on is stored with
  the message once (one record for a fanout to many queues), acks and removals by id.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from amqpd.errors import AMQPError
from amqpd.protocol.fieldtable import decode_table, encode_table

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _str(value: str) -> tuple[bytes, bytes]:
    data = value.encode("utf-8", "surrogatepass")
    return _U16.pack(len(data)), data


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def string(self, value: str) -> _Writer:
        self.parts += _str(value)
        return self

    def blob(self, value: bytes) -> _Writer:
        self.parts += (_U32.pack(len(value)), value)
        return self

    def u8(self, value: int) -> _Writer:
        self.parts.append(_U8.pack(value))
        return self

    def ids(self, values: tuple[int, ...]) -> _Writer:
        self.parts.append(_U32.pack(len(values)))
        self.parts.append(struct.pack(f"<{len(values)}Q", *values))
        return self

    def strings(self, values: tuple[str, ...]) -> _Writer:
        self.parts.append(_U16.pack(len(values)))
        for value in values:
            self.string(value)
        return self

    def table(self, value: Mapping[str, Any]) -> _Writer:
        self.parts.append(encode_table(value))
        return self

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    # Recovery decodes every record of the log: unpack_from at an offset, no slicing of
    # length prefixes. A short payload surfaces as struct.error or the bound check, both
    # turned into ValueError by decode_entry.
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _span(self, n: int) -> int:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise ValueError("record payload too short")
        self.pos = end
        return start

    def string(self) -> str:
        (n,) = _U16.unpack_from(self.data, self.pos)
        start = self._span(2 + n) + 2
        return self.data[start : start + n].decode("utf-8", "surrogatepass")

    def blob(self) -> bytes:
        (n,) = _U32.unpack_from(self.data, self.pos)
        start = self._span(4 + n) + 4
        return self.data[start : start + n]

    def u8(self) -> int:
        return self.data[self._span(1)]

    def u64(self) -> int:
        return int(_U64.unpack_from(self.data, self._span(8))[0])

    def ids(self) -> tuple[int, ...]:
        (n,) = _U32.unpack_from(self.data, self.pos)
        start = self._span(4 + 8 * n) + 4
        return struct.unpack_from(f"<{n}Q", self.data, start)

    def strings(self) -> tuple[str, ...]:
        (n,) = _U16.unpack_from(self.data, self._span(2))
        return tuple([self.string() for _ in range(n)])

    def table(self) -> dict[str, Any]:
        try:
            table, self.pos = decode_table(self.data, self.pos)
        except (AMQPError, IndexError, struct.error) as exc:
            raise ValueError(f"bad field table: {exc}") from None
        return dict(table)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError("trailing bytes in record payload")


@attrs.frozen(slots=True)
class ExchangeDeclared:
    KIND: ClassVar[int] = 1
    vhost: str
    name: str
    type: str
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        flags = int(self.auto_delete) | int(self.internal) << 1
        w = _Writer().string(self.vhost).string(self.name).string(self.type).u8(flags)
        return w.table(self.arguments).done()


@attrs.frozen(slots=True)
class ExchangeDeleted:
    KIND: ClassVar[int] = 2
    vhost: str
    name: str

    def encode(self) -> bytes:
        return _Writer().string(self.vhost).string(self.name).done()


@attrs.frozen(slots=True)
class QueueDeclared:
    KIND: ClassVar[int] = 3
    vhost: str
    name: str
    auto_delete: bool
    arguments: Mapping[str, Any] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        w = _Writer().string(self.vhost).string(self.name).u8(int(self.auto_delete))
        return w.table(self.arguments).done()


@attrs.frozen(slots=True)
class QueueDeleted:
    KIND: ClassVar[int] = 4
    vhost: str
    name: str

    def encode(self) -> bytes:
        return _Writer().string(self.vhost).string(self.name).done()


@attrs.frozen(slots=True)
class BindingAdded:
    KIND: ClassVar[int] = 5
    vhost: str
    source: str
    to_exchange: bool  # destination is an exchange (exchange.bind), else a queue
    destination: str
    routing_key: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        w = _Writer().string(self.vhost).string(self.source).u8(int(self.to_exchange))
        return w.string(self.destination).string(self.routing_key).table(self.arguments).done()

    def key(self) -> tuple[str, str, bool, str, str, bytes]:
        """Identity of the binding (arguments in canonical order)."""
        args = encode_table(dict(sorted(self.arguments.items())))
        return (self.vhost, self.source, self.to_exchange, self.destination, self.routing_key, args)


@attrs.frozen(slots=True)
class BindingRemoved(BindingAdded):
    KIND: ClassVar[int] = 6


@attrs.frozen(slots=True)
class MessagePublished:
    KIND: ClassVar[int] = 7
    id: int
    vhost: str
    queues: tuple[str, ...]
    exchange: str
    routing_key: str
    properties_raw: bytes
    body: bytes
    # Set by recovery instead of ``body`` (then b""): where the body is in the log (a
    # storage.bodies location) and its size, so a restart does not hold every body in RAM.
    body_at: int = attrs.field(default=-1, eq=False)
    body_size: int = attrs.field(default=0, eq=False)

    def encode(self) -> bytes:
        props, body = self.properties_raw, self.body
        head = self.encode_head(self.vhost, self.queues, self.exchange, self.routing_key)
        return b"".join(
            (_U64.pack(self.id), head, _U32.pack(len(props)), props, _U32.pack(len(body)), body)
        )

    @staticmethod
    def encode_head(vhost: str, queues: tuple[str, ...], exchange: str, routing_key: str) -> bytes:
        """The payload between the id and the properties: vhost, queues, exchange, routing
        key. The durable log keeps it per distinct four (a stream of publishes repeats a
        few) and joins id, head, properties and body itself, once per publish."""
        parts = [*_str(vhost), _U16.pack(len(queues))]
        for queue in queues:
            parts += _str(queue)
        parts += (*_str(exchange), *_str(routing_key))
        return b"".join(parts)


@attrs.frozen(slots=True)
class MessagesDelivered:
    """The messages were handed to a consumer at least once (redelivered after restart)."""

    KIND: ClassVar[int] = 8
    vhost: str
    queue: str
    ids: tuple[int, ...]

    def encode(self) -> bytes:
        ids = self.ids
        return b"".join(
            (
                *_str(self.vhost),
                *_str(self.queue),
                _U32.pack(len(ids)),
                struct.pack(f"<{len(ids)}Q", *ids),
            )
        )


@attrs.frozen(slots=True)
class MessagesRemoved(MessagesDelivered):
    """The messages left the queue for good: ack, reject, purge, drop, expiry."""

    KIND: ClassVar[int] = 9


@attrs.frozen(slots=True)
class CleanShutdown:
    """Last record of a graceful stop: nothing was in flight."""

    KIND: ClassVar[int] = 10

    def encode(self) -> bytes:
        return b""


Entry = (
    ExchangeDeclared
    | ExchangeDeleted
    | QueueDeclared
    | QueueDeleted
    | BindingAdded
    | BindingRemoved
    | MessagePublished
    | MessagesDelivered
    | MessagesRemoved
    | CleanShutdown
)


def decode_entry(kind: int, payload: bytes) -> Entry:
    try:
        return _decode(kind, payload)
    except struct.error as exc:
        raise ValueError(f"record payload too short: {exc}") from None


def _decode(kind: int, payload: bytes) -> Entry:
    r = _Reader(payload)
    entry: Entry
    # The hot kinds first: a log is mostly messages, deliveries and removals.
    if kind == MessagePublished.KIND:
        msg_id, vhost, queues = r.u64(), r.string(), r.strings()
        exchange, routing_key = r.string(), r.string()
        entry = MessagePublished(msg_id, vhost, queues, exchange, routing_key, r.blob(), r.blob())
    elif kind in (MessagesDelivered.KIND, MessagesRemoved.KIND):
        mcls = MessagesDelivered if kind == MessagesDelivered.KIND else MessagesRemoved
        entry = mcls(r.string(), r.string(), r.ids())
    elif kind == ExchangeDeclared.KIND:
        vhost, name, xtype, flags = r.string(), r.string(), r.string(), r.u8()
        entry = ExchangeDeclared(vhost, name, xtype, bool(flags & 1), bool(flags & 2), r.table())
    elif kind == ExchangeDeleted.KIND:
        entry = ExchangeDeleted(r.string(), r.string())
    elif kind == QueueDeclared.KIND:
        vhost, name, auto_delete = r.string(), r.string(), bool(r.u8())
        entry = QueueDeclared(vhost, name, auto_delete, r.table())
    elif kind == QueueDeleted.KIND:
        entry = QueueDeleted(r.string(), r.string())
    elif kind in (BindingAdded.KIND, BindingRemoved.KIND):
        cls = BindingAdded if kind == BindingAdded.KIND else BindingRemoved
        vhost, source, to_exchange = r.string(), r.string(), bool(r.u8())
        entry = cls(vhost, source, to_exchange, r.string(), r.string(), r.table())
    elif kind == CleanShutdown.KIND:
        entry = CleanShutdown()
    else:
        raise ValueError(f"unknown record kind {kind}")
    r.end()
    return entry
