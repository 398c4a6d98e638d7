"""pika SelectConnection (callback style on pika's own ioloop).

Each test drives one ioloop with a hard deadline (``Loop``): the loop stops when the scenario
calls ``done()`` or fails, or when the deadline passes (test failure)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika import spec
from rawamqp import is_rabbitmq

DEADLINE = 10.0


class Loop:
    """Runs one SelectConnection until done()/fail() or the deadline."""

    def __init__(
        self,
        url: str,
        on_open: Callable[[Loop, pika.SelectConnection], None],
        **param_overrides: Any,
    ) -> None:
        self.params = pika.URLParameters(url)
        for k, v in param_overrides.items():
            setattr(self.params, k, v)
        self.on_open_cb = on_open
        self.error: BaseException | str | None = None
        self.finished = False
        self.close_reason: BaseException | None = None
        self.events: list[Any] = []
        self.conn = pika.SelectConnection(
            self.params,
            on_open_callback=self._opened,
            on_open_error_callback=self._open_error,
            on_close_callback=self._closed,
        )

    def _opened(self, conn: pika.SelectConnection) -> None:
        try:
            self.on_open_cb(self, conn)
        except BaseException as e:  # surface assertion errors from callbacks
            self.fail(e)

    def _open_error(self, conn: Any, err: BaseException) -> None:
        self.fail(err)

    def _closed(self, conn: Any, reason: BaseException) -> None:
        self.close_reason = reason
        self.conn.ioloop.stop()

    def guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a callback so that an exception in it fails the test (pika would log it)."""

        def wrapper(*a: Any, **kw: Any) -> None:
            try:
                fn(*a, **kw)
            except BaseException as e:
                self.fail(e)

        return wrapper

    def fail(self, err: BaseException | str) -> None:
        if self.error is None:
            self.error = err
        self._stop()

    def done(self) -> None:
        self.finished = True
        self._stop()

    def _stop(self) -> None:
        if self.conn.is_open:
            self.conn.close()  # _closed stops the loop
        elif self.conn.is_closed:
            self.conn.ioloop.stop()
        # closing: _closed will stop it

    def run(self, deadline: float = DEADLINE) -> None:
        timer = self.conn.ioloop.call_later(deadline, lambda: self.fail("deadline passed"))
        self.conn.ioloop.start()
        self.conn.ioloop.remove_timeout(timer)
        if isinstance(self.error, BaseException):
            raise self.error
        if self.error is not None:
            pytest.fail(str(self.error))


def test_pika_select_publish_confirm_consume(amqp_url: str, names: Any) -> None:
    qname = names.queue()
    n = 20
    state: dict[str, Any] = {"acked": set(), "nacked": set(), "bodies": [], "blocked_cbs": 0}

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        # registering blocked/unblocked callbacks must not disturb anything
        conn.add_on_connection_blocked_callback(lambda *a: loop.events.append(("blocked", a)))
        conn.add_on_connection_unblocked_callback(lambda *a: loop.events.append(("unblocked", a)))
        conn.channel(on_open_callback=loop.guard(on_channel))

    def on_channel(ch: Any) -> None:
        state["ch"] = ch
        ch.add_on_close_callback(lambda c, reason: state.setdefault("ch_closed", reason))
        ch.confirm_delivery(
            ack_nack_callback=loop.guard(on_confirm),
            callback=loop.guard(
                lambda _f: ch.queue_declare(qname, callback=loop.guard(on_declared))
            ),
        )

    def on_declared(frame: Any) -> None:
        assert frame.method.queue == qname
        ch = state["ch"]
        ch.basic_qos(
            prefetch_count=5,
            callback=loop.guard(
                lambda _f: ch.basic_consume(
                    qname, loop.guard(on_message), callback=loop.guard(on_consume_ok)
                )
            ),
        )

    def on_consume_ok(frame: Any) -> None:
        state["ctag"] = frame.method.consumer_tag
        for i in range(n):
            state["ch"].basic_publish(
                "", qname, b"msg-%d" % i, pika.BasicProperties(delivery_mode=2, message_id=str(i))
            )

    def on_confirm(frame: Any) -> None:
        m = frame.method
        tags = set(range(1, m.delivery_tag + 1)) if m.multiple else {m.delivery_tag}
        if isinstance(m, spec.Basic.Ack):
            state["acked"] |= tags
        else:
            state["nacked"] |= tags
        maybe_finish()

    def on_message(ch: Any, deliver: Any, props: Any, body: bytes) -> None:
        assert deliver.routing_key == qname and deliver.exchange == ""
        assert props.message_id == str(len(state["bodies"]))
        state["bodies"].append(body)
        ch.basic_ack(deliver.delivery_tag)
        maybe_finish()

    def maybe_finish() -> None:
        if len(state["bodies"]) == n and len(state["acked"]) == n:
            ch = state["ch"]
            ch.basic_cancel(state["ctag"], callback=loop.guard(lambda _f: ch.close()))
            ch.add_on_close_callback(lambda c, reason: loop.done())

    loop = Loop(amqp_url, on_open)
    loop.run()
    assert loop.finished
    assert state["acked"] == set(range(1, n + 1)) and not state["nacked"]
    assert state["bodies"] == [b"msg-%d" % i for i in range(n)]
    assert loop.events == []  # no connection.blocked on an idle broker
    # the connection closed cleanly (client-initiated)
    assert isinstance(loop.close_reason, pika.exceptions.ConnectionClosedByClient)
    assert loop.close_reason.reply_code == 200


def test_pika_select_heartbeat_negotiation(amqp_url: str) -> None:
    seen: dict[str, Any] = {}

    def choose(conn: Any, server_value: int) -> int:
        seen["server"] = server_value
        return 2

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        seen["negotiated"] = conn.params.heartbeat
        seen["frame_max"] = conn.params.frame_max
        seen["channel_max"] = conn.params.channel_max
        loop.done()

    loop = Loop(amqp_url, on_open, heartbeat=choose)
    loop.run()
    assert seen == {"server": 60, "negotiated": 2, "frame_max": 131072, "channel_max": 2047}

    # a plain integer: pika keeps the client's value when both are non-zero and it is smaller
    seen.clear()
    loop = Loop(amqp_url, on_open, heartbeat=5)
    loop.run()
    assert seen["negotiated"] == 5


def test_pika_select_channel_error_then_new_channel(amqp_url: str, names: Any) -> None:
    missing = names.queue("missing")
    state: dict[str, Any] = {}

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        def first(ch: Any) -> None:
            ch.add_on_close_callback(loop.guard(on_ch_closed))
            ch.queue_declare(missing, passive=True, callback=lambda f: loop.fail("declared?"))

        def on_ch_closed(ch: Any, reason: Any) -> None:
            state["reason"] = reason
            conn.channel(on_open_callback=loop.guard(second))

        def second(ch: Any) -> None:
            ch.queue_declare(
                "",
                exclusive=True,
                callback=loop.guard(lambda f: (state.setdefault("q", f.method.queue), loop.done())),
            )

        conn.channel(on_open_callback=loop.guard(first))

    loop = Loop(amqp_url, on_open)
    loop.run()
    reason = state["reason"]
    assert isinstance(reason, pika.exceptions.ChannelClosedByBroker)
    assert reason.reply_code == 404
    assert reason.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
    assert state["q"].startswith("amq.gen-")


def test_pika_select_hard_error_closes_connection(amqp_url: str) -> None:
    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        conn.channel(
            on_open_callback=loop.guard(
                lambda ch: ch.basic_qos(
                    prefetch_size=1, prefetch_count=0, callback=lambda f: loop.fail("qos accepted?")
                )
            )
        )

    loop = Loop(amqp_url, on_open)
    loop.run()
    reason = loop.close_reason
    assert isinstance(reason, pika.exceptions.ConnectionClosedByBroker)
    assert reason.reply_code == 540
    assert reason.reply_text == "NOT_IMPLEMENTED - prefetch_size!=0 (1)"


def test_pika_select_mandatory_return_then_ack(amqp_url: str, names: Any) -> None:
    xname = names.exchange()
    state: dict[str, Any] = {"order": []}

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        def on_ch(ch: Any) -> None:
            ch.add_on_return_callback(
                loop.guard(
                    lambda c, m, p, b: state["order"].append(
                        ("return", m.reply_code, m.reply_text, b)
                    )
                )
            )
            ch.confirm_delivery(
                ack_nack_callback=loop.guard(on_confirm),
                callback=loop.guard(
                    lambda _f: ch.exchange_declare(
                        xname,
                        "direct",
                        callback=loop.guard(
                            lambda _f2: ch.basic_publish(xname, "nowhere", b"lost", mandatory=True)
                        ),
                    )
                ),
            )

        def on_confirm(frame: Any) -> None:
            state["order"].append(
                (
                    "ack" if isinstance(frame.method, spec.Basic.Ack) else "nack",
                    frame.method.delivery_tag,
                )
            )
            loop.done()

        conn.channel(on_open_callback=loop.guard(on_ch))

    loop = Loop(amqp_url, on_open)
    loop.run()
    assert state["order"] == [("return", 312, "NO_ROUTE", b"lost"), ("ack", 1)]


def test_pika_select_consumer_cancel_notification(amqp_url: str) -> None:
    """Deleting a consumed queue: the broker sends basic.cancel (consumer_cancel_notify)."""
    qname = f"interop.select.cancel.{uuid.uuid4().hex[:10]}"
    state: dict[str, Any] = {}

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        def on_ch(ch: Any) -> None:
            state["ch"] = ch
            ch.add_on_cancel_callback(loop.guard(on_cancel))
            ch.queue_declare(
                qname,
                auto_delete=False,
                callback=loop.guard(
                    lambda _f: ch.basic_consume(
                        qname, lambda *a: None, callback=loop.guard(on_consuming)
                    )
                ),
            )

        def on_consuming(frame: Any) -> None:
            state["ctag"] = frame.method.consumer_tag
            conn.channel(
                on_open_callback=loop.guard(
                    lambda ch2: ch2.queue_delete(qname, callback=lambda _f: None)
                )
            )

        def on_cancel(frame: Any) -> None:
            state["cancel"] = frame.method
            loop.done()

        conn.channel(on_open_callback=loop.guard(on_ch))

    loop = Loop(amqp_url, on_open)
    loop.run()
    assert isinstance(state["cancel"], spec.Basic.Cancel)
    assert state["cancel"].consumer_tag == state["ctag"]


def test_pika_select_product(amqp_url: str) -> None:
    seen: dict[str, Any] = {}

    def on_open(loop: Loop, conn: pika.SelectConnection) -> None:
        props = conn.server_properties
        seen["product"] = props["product"]
        seen["caps"] = conn.server_capabilities
        loop.done()

    Loop(amqp_url, on_open).run()
    product = seen["product"].decode() if isinstance(seen["product"], bytes) else seen["product"]
    assert (product == "RabbitMQ") == is_rabbitmq(amqp_url)
    assert seen["caps"]["consumer_cancel_notify"] is True
