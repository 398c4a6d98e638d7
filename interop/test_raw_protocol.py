"""Raw-socket protocol tests: handshake, tuning, framing errors and hard (connection) errors.

Frames are built with pika.spec/pika.frame (interop/rawamqp.py), never with amqpd's codec.
Every fact pinned here was observed on RabbitMQ 3.10.8 (the oracle); where 3.13 differs the
test says so and checks the 3.13 behaviour for amqpd (detected by server_properties.product).

Timing facts that cost real time on RabbitMQ are grouped so that they run concurrently:
* handshake failures (before connection.open-ok) close the socket silently after 3 s
  (rabbit_reader SILENT_CLOSE_DELAY);
* "fatal" frame errors (frame too large, bad frame-end) send connection.close 501 and close the
  socket 3 s later, whether or not the client answers close-ok;
* missed heartbeats (heartbeat=1) close the socket ~3 s after the client went silent.
"""

from __future__ import annotations

import struct
import time
import uuid
from typing import Any

import pytest
from pika import frame as pframe
from pika import spec
from rawamqp import (
    PROTOCOL_HEADER,
    ConnectionClosedByPeer,
    RawConnection,
    amqplain_response,
    is_rabbitmq,
    method_payload,
    raw_frame,
    run_concurrently,
    server_product,
)

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
REJECT_REPLY = b"AMQP\x00\x00\x09\x01"
SILENT_CLOSE_DELAY = 3.0  # RabbitMQ's rabbit_reader ?SILENT_CLOSE_DELAY


def open_conn(url: str, **hs: Any) -> RawConnection:
    c = RawConnection.from_url(url)
    c.handshake(**hs)
    return c


def assert_close(close: Any, code: int, class_id: int, method_id: int,
                 text: str | None = None, prefix: str | None = None) -> None:
    assert close.reply_code == code, close
    assert (close.class_id, close.method_id) == (class_id, method_id), close
    if text is not None:
        assert close.reply_text == text, close
    if prefix is not None:
        assert close.reply_text.startswith(prefix), close


# -- protocol header ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    b"AMQP\x01\x01\x00\x0a",       # 0-10
    b"AMQP\x00\x00\x09\x00",       # "0-9-0" in the new style: not a version RabbitMQ knows
    b"AMQP\x00\x00\x0a\x00",       # 0-10 in the new style
    b"AMQP\x03\x01\x00\x00",       # AMQP 1.0 SASL (the 1.0 plugin is not enabled)
    b"AMQP\x00\x01\x00\x00",       # AMQP 1.0
    b"HTTP/1.1",
    b"GET / HTTP/1.1\r\n\r\n",
], ids=["amqp0-10", "amqp0-9-0", "amqp0-10-new", "amqp1.0-sasl", "amqp1.0", "http", "http-get"])
def test_raw_bad_protocol_header(amqp_url: str, header: bytes) -> None:
    """Any unsupported header: the server answers with its own 0-9-1 header, then closes."""
    with RawConnection.from_url(amqp_url) as c:
        c.send(header)
        assert c.expect_eof(3.0) == REJECT_REPLY


@pytest.mark.parametrize(("header", "version"), [
    (PROTOCOL_HEADER, (0, 9)),
    (b"AMQP\x01\x01\x00\x09", (0, 9)),  # legacy 0-9 header: handled as 0-9-1
    (b"AMQP\x01\x01\x09\x01", (8, 0)),  # legacy header: RabbitMQ treats it as 0-8
    (b"AMQP\x01\x01\x08\x00", (8, 0)),  # 0-8 (dropped only in RabbitMQ 4.0)
], ids=["0-9-1", "legacy-0-9", "legacy-9-1-is-0-8", "0-8"])
def test_raw_accepted_protocol_headers(amqp_url: str, header: bytes,
                                       version: tuple[int, int]) -> None:
    with RawConnection.from_url(amqp_url) as c:
        c.send(header)
        start = c.expect_method(spec.Connection.Start, 0)
        assert (start.version_major, start.version_minor) == version
        caps = start.server_properties.get("capabilities")
        if version == (0, 9):
            assert caps and caps.get("publisher_confirms") is True
        else:
            assert caps == {}  # RabbitMQ advertises no capabilities to 0-8 clients


# -- connection.start / tune ----------------------------------------------------------------

CAPABILITIES = ["publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"]


def test_raw_connection_start_contents(amqp_url: str) -> None:
    with RawConnection.from_url(amqp_url) as c:
        c.send(PROTOCOL_HEADER)
        start = c.expect_method(spec.Connection.Start, 0)
    print(start)
    assert (start.version_major, start.version_minor) == (0, 9)
    props = start.server_properties
    caps = props["capabilities"]
    for key in CAPABILITIES:
        assert caps.get(key) is True, key
    for key in ("product", "version", "platform", "copyright", "information", "cluster_name"):
        assert key in props, key
    mechanisms = start.mechanisms.decode().split()
    assert "PLAIN" in mechanisms and "AMQPLAIN" in mechanisms
    assert start.locales.decode().split() == ["en_US"]


def test_raw_tune_values(amqp_url: str) -> None:
    c = open_conn(amqp_url)
    try:
        tune = c.hs.tune
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    finally:
        c.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_raw_login_mechanisms(amqp_url: str, mechanism: str) -> None:
    c = open_conn(amqp_url, mechanism=mechanism)
    try:
        c.open_channel(1)
        ok = c.call(1, spec.Queue.Declare(queue="", exclusive=True), spec.Queue.DeclareOk)
        assert ok.queue.startswith("amq.gen-")
    finally:
        c.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_raw_auth_failure_close(amqp_url: str, mechanism: str) -> None:
    """With capability authentication_failure_close the client gets a 403 close (no delay)."""
    with RawConnection.from_url(amqp_url) as c:
        c.password = "wrong-" + uuid.uuid4().hex[:6]
        c.send(PROTOCOL_HEADER)
        c.expect_method(spec.Connection.Start, 0)
        t0 = time.monotonic()
        _start_ok(c, mechanism)
        close = c.expect_connection_close(eof_timeout=2.0)
        assert time.monotonic() - t0 < 1.5
    assert_close(close, 403, 0, 0, text=(
        f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. "
        "For details see the broker logfile."))


def _start_ok(c: RawConnection, mechanism: str,
              client_properties: dict[str, Any] | None = None) -> None:
    if mechanism == "AMQPLAIN":
        response = amqplain_response(c.username, c.password)
    elif mechanism == "PLAIN":
        response = b"\x00" + c.username.encode() + b"\x00" + c.password.encode()
    else:
        response = b"\x00guest\x00guest"
    props = client_properties if client_properties is not None else {
        "capabilities": {"authentication_failure_close": True}}
    c.send_method(0, spec.Connection.StartOk(client_properties=props, mechanism=mechanism,
                                             response=response, locale="en_US"))


def _silent_failure(url: str, step: str, **kw: Any) -> tuple[bytes, float]:
    """Run one handshake that RabbitMQ rejects without a close frame; (bytes seen, seconds)."""
    c = RawConnection.from_url(url, timeout=6.0)
    try:
        c.send(PROTOCOL_HEADER)
        c.expect_method(spec.Connection.Start, 0)
        if step == "start-ok":
            _start_ok(c, kw["mechanism"])
        elif step == "big-frame-before-tune":
            # Until tune-ok the frame limit is 4096 (initial_frame_max): 4097 octets is too big.
            c.send(raw_frame(FRAME_METHOD, 0, b"x" * 4097))
        else:
            _start_ok(c, "PLAIN")
            tune = c.expect_method(spec.Connection.Tune, 0)
            c.send_method(0, spec.Connection.TuneOk(
                channel_max=kw.get("channel_max", tune.channel_max),
                frame_max=kw.get("frame_max", tune.frame_max),
                heartbeat=tune.heartbeat))
            # RabbitMQ closes while still in `tuning`, before it would read connection.open.
        return c.expect_silent_close(6.0)
    finally:
        c.close_socket()


def test_raw_handshake_failures_close_silently(amqp_url: str) -> None:
    """Before connection.open-ok, errors get no connection.close: RabbitMQ waits
    SILENT_CLOSE_DELAY (3 s) and drops the TCP connection (3.13 too: rabbit_reader wraps the
    tune-ok negotiation error, so the `tuning` not_allowed clause never sends a 530).

    Exceptions, tested elsewhere: a bad password with capability authentication_failure_close
    (403 close) and an unknown vhost (530 close).
    """
    wrong = {"capabilities": {}}  # no authentication_failure_close capability
    cases = {
        "tune-ok frame_max 4095 (< 4096)": dict(step="tune", frame_max=4095),
        "tune-ok frame_max 0 (= unlimited > 131072)": dict(step="tune", frame_max=0),
        "tune-ok frame_max 131073": dict(step="tune", frame_max=131073),
        "tune-ok channel_max 0 (= unlimited > 2047)": dict(step="tune", channel_max=0),
        "tune-ok channel_max 2048": dict(step="tune", channel_max=2048),
        "unknown mechanism": dict(step="start-ok", mechanism="NOPE"),
        "frame > 4096 before tune": dict(step="big-frame-before-tune"),
    }
    # bad password without the capability: silent close as well
    def bad_password() -> tuple[bytes, float]:
        c = RawConnection.from_url(amqp_url, timeout=6.0)
        c.password = "wrong"
        try:
            c.send(PROTOCOL_HEADER)
            c.expect_method(spec.Connection.Start, 0)
            _start_ok(c, "PLAIN", client_properties=wrong)
            return c.expect_silent_close(6.0)
        finally:
            c.close_socket()

    fns: dict[str, Any] = {name: (lambda kw=kw: _silent_failure(amqp_url, **kw))
                           for name, kw in cases.items()}
    fns["bad password, no authentication_failure_close"] = bad_password
    results = run_concurrently(fns, timeout=15)
    rabbit = is_rabbitmq(amqp_url)
    for name, (data, elapsed) in results.items():
        print(f"{name}: {data!r} closed after {elapsed:.3f}s")
        assert data == b"", name
        assert elapsed < 5.0, name
        if rabbit:
            assert elapsed >= SILENT_CLOSE_DELAY - 0.5, name


def test_raw_vhost_not_found(amqp_url: str) -> None:
    vhost = f"no-such-vhost-{uuid.uuid4().hex[:8]}"
    with RawConnection.from_url(amqp_url) as c:
        c.handshake(open_vhost=False)
        c.send_method(0, spec.Connection.Open(virtual_host=vhost))
        close = c.expect_connection_close(eof_timeout=2.0)
    assert_close(close, 530, 10, 40, text=f"NOT_ALLOWED - vhost {vhost} not found")


# -- frame size ------------------------------------------------------------------------------


def _publish_one_body_frame(c: RawConnection, queue: str, size: int) -> None:
    c.send_method(1, spec.Basic.Publish(exchange="", routing_key=queue))
    c.send(pframe.Header(1, size, spec.BasicProperties()).marshal())
    c.send(raw_frame(FRAME_BODY, 1, b"x" * size))


@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_raw_frame_max_boundary_accepted(amqp_url: str, frame_max: int) -> None:
    """A frame whose *payload* is frame_max octets (the whole frame is frame_max + 8) is
    accepted: RabbitMQ checks payload > frame_max - 8 + FRAME_SIZE_FUDGE(8)."""
    c = open_conn(amqp_url, frame_max=frame_max)
    try:
        c.open_channel(1)
        q = c.call(1, spec.Queue.Declare(queue="", exclusive=True), spec.Queue.DeclareOk).queue
        _publish_one_body_frame(c, q, frame_max)
        c.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
        get_ok = c.expect_method(spec.Basic.GetOk, 1)
        assert get_ok.routing_key == q
        header = c.read_frame()
        assert isinstance(header, pframe.Header) and header.body_size == frame_max
        received = 0
        while received < frame_max:
            body = c.read_frame()
            assert isinstance(body, pframe.Body)
            # the server's own frames respect the limit: payload <= frame_max - 8
            assert len(body.fragment) <= frame_max - 8
            received += len(body.fragment)
        assert received == frame_max
    finally:
        c.close()


def _too_large(url: str, frame_max: int, header_only: bool) -> tuple[Any, float]:
    c = open_conn(url, frame_max=frame_max)
    try:
        c.open_channel(1)
        size = frame_max + 1
        if header_only:
            # The limit is enforced on the frame header alone: no payload needs to arrive.
            c.send(struct.pack(">BHI", FRAME_BODY, 1, size))
        else:
            c.send(raw_frame(FRAME_BODY, 1, b"x" * size))
        close = c.expect_connection_close(reply_close_ok=False)
        t0 = time.monotonic()
        c.send_method(0, spec.Connection.CloseOk())
        c.expect_eof(5.0)
        return close, time.monotonic() - t0
    finally:
        c.close_socket()


def test_raw_frame_too_large_and_bad_frame_end(amqp_url: str) -> None:
    """Payload of frame_max + 1 octets → connection.close 501 (class/method 0/0).

    Bad frame-end octet → 501 as well.  Both are "fatal" frame errors: RabbitMQ keeps the
    socket for SILENT_CLOSE_DELAY (3 s) after sending the close, close-ok or not."""
    def bad_frame_end() -> tuple[Any, float]:
        c = open_conn(amqp_url)
        try:
            c.open_channel(1)
            qd = spec.Queue.Declare(queue="", exclusive=True)
            c.send(raw_frame(FRAME_METHOD, 1, method_payload(qd), end=b"\x00"))
            close = c.expect_connection_close(reply_close_ok=False)
            t0 = time.monotonic()
            c.send_method(0, spec.Connection.CloseOk())
            c.expect_eof(5.0)
            return close, time.monotonic() - t0
        finally:
            c.close_socket()

    res = run_concurrently({
        "131073@131072": lambda: _too_large(amqp_url, 131072, False),
        "4097@4096": lambda: _too_large(amqp_url, 4096, False),
        "header-only 131073@131072": lambda: _too_large(amqp_url, 131072, True),
        "bad frame end": bad_frame_end,
    }, timeout=15)
    rabbit = is_rabbitmq(amqp_url)
    for name, (close, elapsed) in res.items():
        print(f"{name}: {close} socket closed {elapsed:.3f}s after close-ok")
        assert_close(close, 501, 0, 0, prefix="FRAME_ERROR - ")
        assert elapsed < 4.5
        if rabbit:
            assert elapsed >= SILENT_CLOSE_DELAY - 0.5
    assert res["131073@131072"][0].reply_text == (
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}")
    assert res["4097@4096"][0].reply_text == (
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}")
    assert res["header-only 131073@131072"][0].reply_text == res["131073@131072"][0].reply_text
    text = res["bad frame end"][0].reply_text
    assert text.startswith("FRAME_ERROR - type 1, all octets = <<0,50,0,10,")
    assert "invalid_frame_end_marker" in text


# -- non-fatal hard errors ------------------------------------------------------------------


def _hard_error(url: str, send: Any, open_channel: bool = True) -> Any:
    c = open_conn(url)
    try:
        if open_channel:
            c.open_channel(1)
        send(c)
        t0 = time.monotonic()
        close = c.expect_connection_close(eof_timeout=2.0)
        # after close-ok the socket goes at once (the 3 s delay is only for fatal frame errors)
        assert time.monotonic() - t0 < 2.0
        return close
    finally:
        c.close_socket()


QD = spec.Queue.Declare(queue="", exclusive=True)


def _publish_start(c: RawConnection) -> None:
    c.send_method(1, spec.Basic.Publish(exchange="", routing_key="x"))


UNEXPECTED_FRAME_CASES = {
    "header-when-method-expected": (
        lambda c: c.send(pframe.Header(1, 3, spec.BasicProperties()).marshal()),
        0, 0, "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    "body-when-method-expected": (
        lambda c: c.send(pframe.Body(1, b"abc").marshal()),
        0, 0, "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    "method-when-header-expected": (
        lambda c: (_publish_start(c), c.send_method(1, QD)),
        60, 40, "UNEXPECTED_FRAME - expected content header for class 60, "
                "got non content header frame instead"),
    "body-when-header-expected": (
        lambda c: (_publish_start(c), c.send(pframe.Body(1, b"abc").marshal())),
        60, 40, "UNEXPECTED_FRAME - expected content header for class 60, "
                "got non content header frame instead"),
    "header-for-wrong-class": (
        lambda c: (_publish_start(c),
                   c.send(raw_frame(FRAME_HEADER, 1, struct.pack(">HHQH", 50, 0, 0, 0)))),
        60, 40, "UNEXPECTED_FRAME - expected content header for class 60, "
                "got one for class 50 instead"),
    "header-with-nonzero-weight": (
        lambda c: (_publish_start(c),
                   c.send(raw_frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 1, 0, 0)))),
        60, 40, "UNEXPECTED_FRAME - expected content header for class 60, "
                "got non content header frame instead"),
    "method-when-body-expected": (
        lambda c: (_publish_start(c),
                   c.send(pframe.Header(1, 10, spec.BasicProperties()).marshal()),
                   c.send_method(1, QD)),
        60, 40, "UNEXPECTED_FRAME - expected content body, got non content body frame instead"),
    "heartbeat-on-channel-1": (
        lambda c: c.send(raw_frame(FRAME_HEARTBEAT, 1, b"")),
        0, 0, "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    "header-on-channel-0": (
        lambda c: c.send(pframe.Header(0, 3, spec.BasicProperties()).marshal()),
        0, 0, "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,3,0,0>>"),
    "body-on-channel-0": (
        lambda c: c.send(pframe.Body(0, b"abc").marshal()),
        0, 0, 'UNEXPECTED_FRAME - type 3, all octets = <<"abc">>'),
}


@pytest.mark.parametrize("case", list(UNEXPECTED_FRAME_CASES))
def test_raw_unexpected_frame_505(amqp_url: str, case: str) -> None:
    send, class_id, method_id, text = UNEXPECTED_FRAME_CASES[case]
    close = _hard_error(amqp_url, send)
    assert_close(close, 505, class_id, method_id, text=text)


def test_raw_heartbeat_on_unopened_channel_505(amqp_url: str) -> None:
    close = _hard_error(amqp_url, lambda c: c.send(raw_frame(FRAME_HEARTBEAT, 1, b"")),
                        open_channel=False)
    assert_close(close, 505, 0, 0, text="UNEXPECTED_FRAME - type 8, all octets = <<>>")


def test_raw_unknown_frame_type_501(amqp_url: str) -> None:
    close = _hard_error(amqp_url, lambda c: c.send(raw_frame(9, 1, b"abc")))
    assert_close(close, 501, 0, 0, prefix="FRAME_ERROR - type 9, ")
    assert close.reply_text == 'FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame'


def test_raw_undecodable_method_501(amqp_url: str) -> None:
    """queue.declare with a truncated argument list."""
    close = _hard_error(
        amqp_url, lambda c: c.send(raw_frame(FRAME_METHOD, 1, struct.pack(">HH", 50, 10) + b"\0")))
    assert_close(close, 501, 50, 10, text="FRAME_ERROR - cannot decode <<0>>")


def test_raw_body_longer_than_declared(amqp_url: str) -> None:
    """A body frame carrying more octets than the header announced.

    RabbitMQ 3.10 does not check it: the assembler keeps waiting for body frames (the remaining
    size went negative), so the next method gets 505 "expected content body".  Newer RabbitMQ
    (rabbit_command_assembler on main) answers 501 "content body frame exceeds remaining
    content size" at once; amqpd may do either, but must fail the connection."""
    def send(c: RawConnection) -> None:
        _publish_start(c)
        c.send(pframe.Header(1, 2, spec.BasicProperties()).marshal())
        c.send(pframe.Body(1, b"abc").marshal())
        c.send_method(1, spec.Basic.Qos(prefetch_count=1))

    close = _hard_error(amqp_url, send)
    if is_rabbitmq(amqp_url):
        assert_close(close, 505, 60, 40, text=(
            "UNEXPECTED_FRAME - expected content body, got non content body frame instead"))
    else:
        assert close.reply_code in (501, 505)
        assert (close.class_id, close.method_id) == (60, 40)


CHANNEL_ERROR_CASES = {
    "method-on-unopened-channel": (
        lambda c: c.send_method(5, QD), False, 50, 10, "CHANNEL_ERROR - expected 'channel.open'"),
    "second-channel-open": (
        lambda c: c.send_method(1, spec.Channel.Open()), True, 20, 10,
        "CHANNEL_ERROR - second 'channel.open' seen"),
    "channel-open-on-channel-0": (
        lambda c: c.send_method(0, spec.Channel.Open()), False, 20, 10,
        "CHANNEL_ERROR - unexpected method in connection state running"),
    "channel-method-on-channel-0": (
        lambda c: c.send_method(0, QD), False, 50, 10,
        "CHANNEL_ERROR - unexpected method in connection state running"),
    "second-connection-open": (
        lambda c: c.send_method(0, spec.Connection.Open(virtual_host="/")), False, 10, 40,
        "CHANNEL_ERROR - unexpected method in connection state running"),
    "second-tune-ok": (
        lambda c: c.send_method(0, spec.Connection.TuneOk(2047, 131072, 60)), False, 10, 31,
        "CHANNEL_ERROR - unexpected method in connection state running"),
}


@pytest.mark.parametrize("case", list(CHANNEL_ERROR_CASES))
def test_raw_channel_error_504(amqp_url: str, case: str) -> None:
    send, open_channel, class_id, method_id, text = CHANNEL_ERROR_CASES[case]
    close = _hard_error(amqp_url, send, open_channel=open_channel)
    assert_close(close, 504, class_id, method_id, text=text)


def test_raw_channel_max_counts_open_channels(amqp_url: str) -> None:
    """channel_max limits how many channels are open, not the channel number: with
    channel_max=2, channels 5 and 100 open fine and the third open gets 530 (class 0/0)."""
    c = open_conn(amqp_url, channel_max=2)
    try:
        c.open_channel(5)
        c.open_channel(100)
        c.send_method(3, spec.Channel.Open())
        close = c.expect_connection_close(eof_timeout=2.0)
    finally:
        c.close_socket()
    assert_close(close, 530, 0, 0, text=(
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"))


def test_raw_channel_numbers_above_channel_max(amqp_url: str) -> None:
    """Channel numbers above the negotiated channel_max (2047) are accepted; and after
    channel.close-ok a number can be reused (the count goes down again)."""
    c = open_conn(amqp_url, channel_max=2)
    try:
        for ch in (2047, 2048, 65535):
            if ch == 65535:
                c.call(2047, spec.Channel.Close(200, "", 0, 0), spec.Channel.CloseOk)
            c.open_channel(ch)
        c.call(2048, spec.Channel.Close(200, "", 0, 0), spec.Channel.CloseOk)
        c.open_channel(2048)
    finally:
        c.close()


NOT_IMPLEMENTED_CASES = {
    "publish-immediate": (
        lambda c: (c.send_method(1, spec.Basic.Publish(exchange="", routing_key="x",
                                                       immediate=True)),
                   c.send(pframe.Header(1, 0, spec.BasicProperties()).marshal())),
        60, 40, "NOT_IMPLEMENTED - immediate=true"),
    "qos-prefetch-size": (
        lambda c: c.send_method(1, spec.Basic.Qos(prefetch_size=10)),
        60, 10, "NOT_IMPLEMENTED - prefetch_size!=0 (10)"),
    "channel-flow-false": (
        lambda c: c.send_method(1, spec.Channel.Flow(active=False)),
        20, 20, "NOT_IMPLEMENTED - active=false"),
    "recover-requeue-false": (
        lambda c: c.send_method(1, spec.Basic.Recover(requeue=False)),
        60, 110, "NOT_IMPLEMENTED - requeue=false"),
}


@pytest.mark.parametrize("case", list(NOT_IMPLEMENTED_CASES))
def test_raw_not_implemented_540(amqp_url: str, case: str) -> None:
    send, class_id, method_id, text = NOT_IMPLEMENTED_CASES[case]
    close = _hard_error(amqp_url, send)
    assert_close(close, 540, class_id, method_id, text=text)


def test_raw_immediate_checked_only_after_content(amqp_url: str) -> None:
    """basic.publish immediate=1 is rejected once the whole content has arrived: the method
    alone gets no reply (the content assembler waits for the header first)."""
    c = open_conn(amqp_url)
    try:
        c.open_channel(1)
        c.send_method(1, spec.Basic.Publish(exchange="", routing_key="x", immediate=True))
        # a round trip on another channel proves the server has read the publish
        c.call(2, spec.Channel.Open(), spec.Channel.OpenOk)
        c.send(pframe.Header(1, 3, spec.BasicProperties()).marshal())
        c.send(pframe.Body(1, b"abc").marshal())
        close = c.expect_connection_close(eof_timeout=2.0)
    finally:
        c.close_socket()
    assert_close(close, 540, 60, 40, text="NOT_IMPLEMENTED - immediate=true")


@pytest.mark.parametrize("case", ["basic.deliver", "channel.open-ok"])
def test_raw_client_sends_server_method_503(amqp_url: str, case: str) -> None:
    """A server-only method from the client → 503 "unimplemented method".  basic.deliver
    carries content, so RabbitMQ only reacts once its header (and body) has arrived."""
    def send(c: RawConnection) -> None:
        if case == "basic.deliver":
            c.send_method(1, spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=1,
                                                exchange="", routing_key="x"))
            c.send(pframe.Header(1, 0, spec.BasicProperties()).marshal())
        else:
            c.send_method(1, spec.Channel.OpenOk())

    close = _hard_error(amqp_url, send)
    ids = (60, 60) if case == "basic.deliver" else (20, 11)
    assert_close(close, 503, *ids, text="COMMAND_INVALID - unimplemented method")


@pytest.mark.parametrize("ids", [(60, 999), (999, 10)], ids=["unknown-method", "unknown-class"])
def test_raw_unknown_method_id_drops_connection(amqp_url: str, ids: tuple[int, int]) -> None:
    """An unknown class/method id makes RabbitMQ's reader exit: the TCP connection is dropped
    at once, with no connection.close."""
    c = open_conn(amqp_url)
    try:
        c.open_channel(1)
        c.send(raw_frame(FRAME_METHOD, 1, struct.pack(">HH", *ids)))
        data, elapsed = c.expect_silent_close(3.0)
    finally:
        c.close_socket()
    print(f"dropped after {elapsed:.3f}s, data {data!r}")
    assert data == b""
    assert elapsed < 1.5


def test_raw_frames_after_server_close_are_ignored(amqp_url: str) -> None:
    """After sending connection.close the server ignores everything but close/close-ok."""
    c = open_conn(amqp_url)
    try:
        c.send_method(5, spec.Basic.Qos(prefetch_count=1))
        close = c.expect_connection_close(reply_close_ok=False)
        assert_close(close, 504, 60, 10, text="CHANNEL_ERROR - expected 'channel.open'")
        c.send_method(1, spec.Channel.Open())
        c.send_method(5, spec.Basic.Qos(prefetch_count=1))
        c.send(raw_frame(9, 1, b"junk"))  # not even a frame error now
        c.send_method(0, spec.Connection.CloseOk())
        data = c.expect_eof(2.0)
        # only heartbeats (8, 0, 0, 0, 0, 0, 0, 0xce) may show up
        assert data.replace(b"\x08\x00\x00\x00\x00\x00\x00\xce", b"") == b""
    finally:
        c.close_socket()


def test_raw_client_close_handshake(amqp_url: str) -> None:
    """Client-initiated close: close-ok comes back at once; then RabbitMQ waits for the client
    to drop TCP, closing it itself after min(heartbeat, 30) s (30 s with heartbeat=0) and
    still sending heartbeats meanwhile.  With heartbeat=1 that is ~1 s."""
    c = open_conn(amqp_url, heartbeat=1)
    try:
        c.open_channel(1)
        c.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye",
                                               class_id=0, method_id=0))
        c.expect_method(spec.Connection.CloseOk, 0)
        t0 = time.monotonic()
        data = c.expect_eof(2.5)
        print(f"server dropped TCP {time.monotonic() - t0:.3f}s after close-ok")
        assert data.replace(b"\x08\x00\x00\x00\x00\x00\x00\xce", b"") == b""
    finally:
        c.close_socket()


def test_raw_hard_error_leaves_other_connections_alone(amqp_url: str) -> None:
    """Connection A's hard error closes only A (and deletes A's exclusive queues); B, opened
    before, keeps working."""
    a = open_conn(amqp_url)
    b = open_conn(amqp_url)
    try:
        a.open_channel(1)
        b.open_channel(1)
        qa = a.call(1, spec.Queue.Declare(queue="", exclusive=True), spec.Queue.DeclareOk).queue
        qb = b.call(1, spec.Queue.Declare(queue="", exclusive=True), spec.Queue.DeclareOk).queue
        a.send_method(1, spec.Channel.Open())  # 504
        close = a.expect_connection_close(eof_timeout=2.0)
        assert close.reply_code == 504
        b.send_method(1, spec.Basic.Publish(exchange="", routing_key=qb))
        b.send_content(1, b"still here")
        b.send_method(1, spec.Basic.Get(queue=qb, no_ack=True))
        b.expect_method(spec.Basic.GetOk, 1)
        assert isinstance(b.read_frame(), pframe.Header)
        body = b.read_frame()
        assert body.fragment == b"still here"
        # A's exclusive queue went with A
        b.send_method(1, spec.Queue.Declare(queue=qa, passive=True))
        ch_close = b.expect_channel_close(1)
        assert ch_close.reply_code == 404
        assert ch_close.reply_text == f"NOT_FOUND - no queue '{qa}' in vhost '/'"
        b.open_channel(1)  # the channel number is reusable after close-ok
        b.call(1, spec.Queue.Declare(queue=qb, passive=True), spec.Queue.DeclareOk)
    finally:
        a.close_socket()
        b.close()


# -- heartbeats ------------------------------------------------------------------------------


def test_raw_heartbeats(amqp_url: str) -> None:
    """heartbeat=1: the server sends heartbeats every 0.5 s and drops a silent client ~3 s
    after its last frame, without connection.close; a client that keeps sending heartbeats
    stays connected.  (Real-time test against the broker's timer, bounded to 4 s.)"""
    def silent() -> tuple[list[tuple[float, Any]], float]:
        c = RawConnection.from_url(amqp_url)
        try:
            c.handshake(heartbeat=1)
            t0 = time.monotonic()
            frames: list[tuple[float, Any]] = []
            try:
                while True:
                    f = c.read_frame(max(0.01, t0 + 4.0 - time.monotonic()))
                    frames.append((time.monotonic() - t0, f))
            except ConnectionClosedByPeer:
                return frames, time.monotonic() - t0
        finally:
            c.close_socket()

    def chatty() -> int:
        c = RawConnection.from_url(amqp_url)
        try:
            c.handshake(heartbeat=1)
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 3.5:
                c.send(pframe.Heartbeat().marshal())
                try:
                    f = c.read_frame(0.3)
                    assert isinstance(f, pframe.Heartbeat)
                    n += 1
                except TimeoutError:
                    pass
            c.open_channel(1)  # still alive and working
            c.close()
            return n
        finally:
            c.close_socket()

    res = run_concurrently({"silent": silent, "chatty": chatty}, timeout=10)
    frames, closed_at = res["silent"]
    print(f"silent client dropped after {closed_at:.3f}s; frames: "
          f"{[(round(t, 3), type(f).__name__) for t, f in frames]}")
    assert all(isinstance(f, pframe.Heartbeat) and f.channel_number == 0 for _, f in frames)
    assert len(frames) >= 2
    assert 1.0 <= closed_at < 4.0
    assert res["chatty"] >= 2


def test_raw_heartbeat_zero_disables(amqp_url: str) -> None:
    """tune-ok heartbeat=0 (and values above the server's 60) are accepted."""
    for hb in (0, 61, 65535):
        c = open_conn(amqp_url, heartbeat=hb)
        try:
            c.open_channel(1)
        finally:
            c.close()


def test_raw_product_detection(amqp_url: str) -> None:
    assert server_product(amqp_url) in ("RabbitMQ", "amqpd")


# -- framing robustness ------------------------------------------------------------------


def _get_one(c: RawConnection, q: str) -> tuple[Any, list[Any]]:
    """basic.get no-ack; returns (header frame, body frames).  Relies on frame order."""
    c.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
    c.expect_method(spec.Basic.GetOk, 1)
    header = c.read_frame()
    assert isinstance(header, pframe.Header)
    bodies = []
    got = 0
    while got < header.body_size:
        f = c.read_frame()
        assert isinstance(f, pframe.Body)
        bodies.append(f)
        got += len(f.fragment)
    return header, bodies


def test_raw_empty_body_and_split_bodies(amqp_url: str) -> None:
    """body_size 0: no body frame at all (either way); a body split into several frames,
    including empty ones, is reassembled."""
    c = open_conn(amqp_url)
    try:
        c.open_channel(1)
        q = c.call(1, spec.Queue.Declare(queue="", exclusive=True), spec.Queue.DeclareOk).queue
        c.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        c.send(pframe.Header(1, 0, spec.BasicProperties(content_type="x/empty")).marshal())
        c.send_method(1, spec.Basic.Publish(exchange="", routing_key=q))
        c.send(pframe.Header(1, 6, spec.BasicProperties()).marshal())
        for part in (b"ab", b"", b"c", b"def"):
            c.send(pframe.Body(1, part).marshal())
        header, bodies = _get_one(c, q)
        assert header.body_size == 0 and bodies == []
        assert header.properties.content_type == "x/empty"
        # the next frame must be the get-ok of the second message, not an empty body frame
        header, bodies = _get_one(c, q)
        assert b"".join(b.fragment for b in bodies) == b"abcdef"
        c.send_method(1, spec.Basic.Get(queue=q, no_ack=True))
        empty = c.expect_method(spec.Basic.GetEmpty, 1)
        assert empty.cluster_id == ""
    finally:
        c.close()


def test_raw_pipelined_and_fragmented_input(amqp_url: str) -> None:
    """Many frames in one write, and frames dribbled a byte at a time, are both parsed."""
    c = RawConnection.from_url(amqp_url)
    try:
        # the whole handshake, one byte per write
        hello = PROTOCOL_HEADER
        for i in range(len(hello)):
            c.send(hello[i:i + 1])
        c.expect_method(spec.Connection.Start, 0)
        start_ok = pframe.Method(0, spec.Connection.StartOk(
            client_properties={"product": "dribble"}, mechanism="PLAIN",
            response=f"\0{c.username}\0{c.password}".encode(), locale="en_US")).marshal()
        for i in range(len(start_ok)):
            c.send(start_ok[i:i + 1])
        c.expect_method(spec.Connection.Tune, 0)
        # tune-ok + open + channel.open + declare + 50 publishes + get, all in one write
        n = 50
        q = f"interop.raw.pipeline.{uuid.uuid4().hex[:10]}"
        parts = [
            pframe.Method(0, spec.Connection.TuneOk(2047, 131072, 0)).marshal(),
            pframe.Method(0, spec.Connection.Open(virtual_host=c.vhost)).marshal(),
            pframe.Method(1, spec.Channel.Open()).marshal(),
            pframe.Method(1, spec.Queue.Declare(queue=q, exclusive=True)).marshal(),
            pframe.Method(1, spec.Confirm.Select()).marshal(),
        ]
        for i in range(n):
            parts.append(pframe.Method(1, spec.Basic.Publish(exchange="", routing_key=q))
                         .marshal())
            parts.append(pframe.Header(1, len(str(i)), spec.BasicProperties()).marshal())
            parts.append(pframe.Body(1, str(i).encode()).marshal())
        c.send(b"".join(parts))
        c.expect_method(spec.Connection.OpenOk, 0)
        c.expect_method(spec.Channel.OpenOk, 1)
        assert c.expect_method(spec.Queue.DeclareOk, 1).queue == q
        c.expect_method(spec.Confirm.SelectOk, 1)
        acked = 0
        while acked < n:  # acks may be `multiple`
            ack = c.expect_method(spec.Basic.Ack, 1)
            assert ack.delivery_tag > acked
            acked = ack.delivery_tag
        # Only after the confirms is the count certain: RabbitMQ answers a passive declare
        # with a prioritised stat call that can overtake publishes still in flight.
        ok = c.call(1, spec.Queue.Declare(queue=q, passive=True), spec.Queue.DeclareOk)
        assert ok.message_count == n
        for i in range(n):
            _, bodies = _get_one(c, q)
            assert b"".join(b.fragment for b in bodies) == str(i).encode()
    finally:
        c.close()
