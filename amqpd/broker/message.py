"""Message: one published message as the broker keeps it.

Rules of this module:
- A Message is a value: nobody mutates it after construction (``with_properties`` makes a
  new one). The one exception is the decoded-properties cache, filled on first use.
- Properties stay as the raw bytes of the content header (protocol/properties.py encoding);
  most messages are routed and delivered without ever decoding them.
- ``bcc`` keeps the BCC routing keys of a publish after the BCC header was stripped from
  the delivered copy: dead-lettering without a dead-letter routing key routes by *all* the
  original keys, BCC included (rabbit_dead_letter:make_msg/5 keeps ``routing_keys``).
- ``expiration_ms`` is the per-message TTL (the ``expiration`` property), read once; the
  session has validated the text at publish (406 "invalid expiration"), so a value that
  does not parse here (a message built by a test) counts as no TTL.
- ``store_id`` is the message's id in the durable log (0: not stored), set once, before the
  message is enqueued anywhere (broker/durability.py); ``store_segment`` is the number of
  the log segment holding its ``MessagePublished`` record (0 with ``store_id`` 0), which
  the durable log's liveness needs when the message leaves a queue.
- Paging (broker/paging.py, docs/storage.md "Paging") is the other exception: the body may
  leave memory (``_body`` None) while a copy is on disk at ``_where`` in ``_pager`` (the
  durable log's segments or the spill files); ``body`` then reads it back, every time,
  without keeping it. ``size`` is kept, so length limits and accounting never read.
  A message whose body went to the spill files becomes a ``SpilledMessage``, whose
  ``__del__`` frees its place there (no other path knows when a message dies).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

# At module level: ``persistent`` runs for every publish, and an import statement in a
# function costs a sys.modules lookup on each call.
from amqpd.protocol.frames import shortstr
from amqpd.protocol.properties import BasicProperties, peek_delivery_mode


class BodySource(Protocol):
    """Where paged-out bodies are read back from (storage.bodies readers)."""

    def read(self, where: int, size: int) -> bytes: ...


class SpillSource(BodySource, Protocol):
    def release(self, where: int) -> None: ...


# ``Message.route`` by (exchange, routing key): publishers repeat a few of them. A pure
# function's cache, shared by every broker in the process.
_ROUTES: dict[tuple[str, str], bytes] = {}
_ROUTES_KEPT = 1024

# Property flag bit of ``expiration`` (spec 0-9-1 4.2.6.1, basic class).
_FLAG_EXPIRATION = 1 << 8
_UNSET = -2


class Message:
    __slots__ = (
        "_body",
        "_pager",
        "_properties",
        "_route",
        "_ttl",
        "_where",
        "bcc",
        "exchange",
        "properties_raw",
        "routing_key",
        "size",
        "store_id",
        "store_segment",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        properties_raw: bytes,
        body: bytes,
        properties: BasicProperties | None = None,
        bcc: tuple[str, ...] = (),
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties_raw = properties_raw
        self._body: bytes | None = body
        #: Body size in bytes (what x-max-length-bytes counts); known even when paged out.
        self.size = len(body)
        self._pager: BodySource | None = None
        self._where = 0
        self._properties = properties
        self.bcc = bcc
        self._ttl = _UNSET
        self._route: bytes | None = None
        self.store_id = 0
        self.store_segment = 0

    @property
    def properties(self) -> BasicProperties:
        """The decoded properties, decoded once and cached."""
        props = self._properties
        if props is None:
            # b"" (no flag word at all) is accepted as "no properties" for convenience.
            raw = self.properties_raw
            props = BasicProperties.decode(raw) if raw else BasicProperties()
            self._properties = props
        return props

    @property
    def persistent(self) -> bool:
        # delivery-mode 2 = persistent (spec 0-9-1, basic class, property delivery-mode).
        # Read straight from the raw bytes unless the properties are decoded already.
        if self._properties is not None:
            return self._properties.delivery_mode == 2
        raw = self.properties_raw
        return bool(raw) and peek_delivery_mode(raw) == 2

    @property
    def route(self) -> bytes:
        """Exchange and routing key as the two shortstrs of a basic.deliver, encoded once
        (a fanout delivers the same message from several queues)."""
        route = self._route
        if route is None:
            key = (self.exchange, self.routing_key)
            route = _ROUTES.get(key)
            if route is None:
                route = shortstr(self.exchange) + shortstr(self.routing_key)
                if len(_ROUTES) >= _ROUTES_KEPT:
                    _ROUTES.clear()  # client-chosen keys: bounded, and simply so
                _ROUTES[key] = route
            self._route = route
        return route

    @property
    def body(self) -> bytes:
        """The body; read back from disk (and not kept) when it was paged out."""
        body = self._body
        if body is not None:
            return body
        assert self._pager is not None
        return self._pager.read(self._where, self.size)

    @property
    def resident(self) -> bool:
        """The body is in memory."""
        return self._body is not None

    def on_disk(self, source: BodySource, where: int) -> None:
        """A copy of the body is (or, once committed, will be) at ``where`` in ``source``."""
        self._pager = source
        self._where = where

    @property
    def place(self) -> tuple[BodySource | None, int]:
        """Where the on-disk copy of the body is: its source (None: nowhere) and location."""
        return self._pager, self._where

    @property
    def pageable(self) -> bool:
        """The body is in memory and a copy on disk: ``drop_body`` may forget it."""
        return self._body is not None and self._pager is not None

    def drop_body(self) -> None:
        """Forget the in-memory body; ``on_disk`` said where the copy is."""
        assert self._pager is not None
        self._body = None

    def spill(self, source: SpillSource, where: int) -> None:
        """The body went to the spill files at ``where``: forget it here."""
        self._pager = source
        self._where = where
        self._body = None
        self.__class__ = SpilledMessage

    @property
    def expiration_ms(self) -> int | None:
        """The per-message TTL in ms (``expiration`` property), None when absent."""
        ttl = self._ttl
        if ttl == _UNSET:
            ttl = -1
            raw = self.properties_raw
            # Only decode when the flag word says the property is there (the hot path).
            if len(raw) >= 2 and ((raw[0] << 8) | raw[1]) & _FLAG_EXPIRATION:
                text = self.properties.expiration
                if text is not None:
                    try:
                        ttl = max(int(text), 0)
                    except ValueError:
                        ttl = -1
            self._ttl = ttl
        return None if ttl < 0 else ttl

    def with_properties(self, properties: BasicProperties) -> Message:
        return Message(
            self.exchange, self.routing_key, properties.encode(), self.body, properties, self.bcc
        )

    def headers(self) -> dict[str, object]:
        """The headers table (empty when absent)."""
        if not self.properties_raw:
            return {}
        headers = self.properties.headers
        return dict(headers) if headers else {}

    def __repr__(self) -> str:
        return (
            f"Message(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"properties_raw={self.properties_raw!r}, body={self.body[:64]!r})"
        )


class SpilledMessage(Message):
    """A message whose body is in the spill files: frees its place there when it dies."""

    __slots__ = ()

    def __del__(self) -> None:
        # Errors are swallowed: at interpreter exit, or a spill file already removed.
        with contextlib.suppress(Exception):
            self._pager.release(self._where)  # type: ignore[union-attr]
