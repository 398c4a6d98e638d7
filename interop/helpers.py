"""Small helpers shared by the pika interop tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

#: Upper bound for any wait on an event that must happen (a delivery, a cancel, a deletion).
TIMEOUT = 5.0


def product(conn: pika.BlockingConnection) -> str:
    """The server's ``product`` property ("RabbitMQ", "amqpd", ...), as str."""
    value = conn._impl.server_properties.get("product", "")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


def is_rabbitmq(conn: pika.BlockingConnection) -> bool:
    return product(conn) == "RabbitMQ"


def server_version(conn: pika.BlockingConnection) -> tuple[int, ...]:
    value = conn._impl.server_properties.get("version", "0")
    if isinstance(value, bytes):
        value = value.decode()
    parts = []
    for p in str(value).split("."):
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def wait_for(
    conns: pika.BlockingConnection | Iterable[pika.BlockingConnection],
    predicate: Callable[[], bool],
    timeout: float = TIMEOUT,
    what: str = "condition",
) -> None:
    """Pump the connections' I/O until ``predicate()`` holds; fail after ``timeout`` s.

    A bounded wait for something that must happen, not a sleep: returns as soon as it holds.
    """
    if isinstance(conns, pika.BlockingConnection):
        conns = [conns]
    conns = list(conns)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        step = 0.01 if len(conns) > 1 else 0.05
        for c in conns:
            c.process_data_events(time_limit=step)


class Collector:
    """basic_consume callback that records (method, properties, body)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, Any, bytes]] = []

    def __call__(self, _ch: Any, method: Any, properties: Any, body: bytes) -> None:
        self.messages.append((method, properties, body))

    @property
    def bodies(self) -> list[bytes]:
        return [m[2] for m in self.messages]

    def __len__(self) -> int:
        return len(self.messages)


def consume_n(
    conn: pika.BlockingConnection,
    ch: Any,
    queue: str,
    n: int,
    auto_ack: bool = True,
    timeout: float = TIMEOUT,
) -> list[tuple[Any, Any, bytes]]:
    """Consume exactly ``n`` messages (bounded wait), cancel the consumer, return them."""
    col = Collector()
    tag = ch.basic_consume(queue, col, auto_ack=auto_ack)
    wait_for(conn, lambda: len(col) >= n, timeout, f"{n} message(s) from {queue!r}")
    ch.basic_cancel(tag)
    return col.messages


def publish_confirmed(
    conn: pika.BlockingConnection,
    exchange: str,
    routing_key: str,
    bodies: Iterable[bytes],
    **kw: Any,
) -> None:
    """Publish on a fresh confirm-mode channel; on return the broker has routed them all."""
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        ch.basic_publish(exchange, routing_key, body, **kw)
    ch.close()


def queue_depth(conn: pika.BlockingConnection, queue: str) -> tuple[int, int]:
    """(message_count, consumer_count) from a passive declare on a throwaway channel."""
    ch = conn.channel()
    ok = ch.queue_declare(queue, passive=True)
    ch.close()
    return ok.method.message_count, ok.method.consumer_count


def queue_exists(conn: pika.BlockingConnection, queue: str) -> bool:
    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, (e.reply_code, e.reply_text)
        return False
    ch.close()
    return True


def exchange_exists(conn: pika.BlockingConnection, exchange: str) -> bool:
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, (e.reply_code, e.reply_text)
        return False
    ch.close()
    return True


def wait_queue_gone(conn: pika.BlockingConnection, queue: str, timeout: float = TIMEOUT) -> None:
    """Bounded wait until a passive declare of ``queue`` gets 404 (deletion may be asynchronous)."""
    wait_for(conn, lambda: not queue_exists(conn, queue), timeout, f"queue {queue!r} to be deleted")


def amqp_reply_text(text: str) -> str:
    """A reply text as RabbitMQ puts it on the wire: a shortstr, so texts over 255 bytes are
    cut to their first 252 characters plus "..." (observed on RabbitMQ 3.10.8)."""
    if len(text.encode()) <= 255:
        return text
    return text[:252] + "..."


@contextlib.contextmanager
def channel_error(code: int, text: str | None = None, prefix: str | None = None) -> Iterator[Any]:
    """Expect a channel.close from the broker with ``code`` and exact ``text`` (or ``prefix``)."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        yield info
    err = info.value
    assert err.reply_code == code, (err.reply_code, err.reply_text)
    if text is not None:
        assert err.reply_text == text, f"got {err.reply_text!r} ({len(err.reply_text)} chars)"
    if prefix is not None:
        assert err.reply_text.startswith(prefix), err.reply_text


@contextlib.contextmanager
def connection_error(
    code: int, text: str | None = None, prefix: str | None = None
) -> Iterator[Any]:
    """Expect a connection.close from the broker with ``code`` and exact ``text`` (or prefix)."""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        yield info
    err = info.value
    assert err.reply_code == code, (err.reply_code, err.reply_text)
    if text is not None:
        assert err.reply_text == text, f"got {err.reply_text!r} ({len(err.reply_text)} chars)"
    if prefix is not None:
        assert err.reply_text.startswith(prefix), err.reply_text


def assert_connection_usable(conn: pika.BlockingConnection) -> None:
    """After a soft error: the connection is open and a new channel works end to end."""
    assert conn.is_open
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still alive")
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == b"still alive"
    ch.close()


def send_raw(ch: Any, method: Any, content: tuple[Any, bytes] | None = None) -> None:
    """Send a method pika's public API refuses to send (e.g. immediate=True); no reply awaited."""
    if content is None:
        ch._impl._send_method(method)
    else:
        ch._impl._send_method(method, content)


def expect_connection_close(conn: pika.BlockingConnection, timeout: float = TIMEOUT) -> None:
    """Pump I/O until the broker closes the connection (raises ConnectionClosedByBroker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    pytest.fail("broker did not close the connection")
