"""Connection handshake: protocol header, start/start-ok, auth, tune/tune-ok, open.

Expected behaviour is RabbitMQ's, observed on the 3.10.8 oracle (raw sockets, 2026-11-23)
and read from rabbit_reader.erl (same code paths in 3.13):
- a bad header gets ``AMQP 0 0 9 1`` back and the socket closed at once;
- errors before connection.open are *silent*: no frame, socket closed 3 s later
  (SILENT_CLOSE_DELAY), except a refused login when the client announced
  ``authentication_failure_close`` (403 close first);
- a refused connection.open gets connection.close 530 and waits for close-ok.
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.session.config import SERVER_CAPABILITIES, ConnectionConfig

from .conftest import HEADER_091, Client, FakeBroker, close_of, decode_all, encode

S = pika.spec

REFUSED_TEXT = (
    "ACCESS_REFUSED - Login was refused using authentication mechanism {}. "
    "For details see the broker logfile."
)


def assert_silent_close(c: Client, frames: list[object], at: float) -> None:
    """No frame now; still open just before ``at``+3 s, closed at it."""
    assert frames == []
    assert not c.conn.closed
    assert c.conn.next_deadline() == pytest.approx(at + 3.0)
    assert c.tick(at + 2.999) == []
    assert not c.conn.closed
    assert c.tick(at + 3.0) == []
    assert c.conn.closed
    assert c.conn.next_deadline() is None


# ------------------------------------------------------------------ protocol header


def test_connection_start_like_rabbitmq(client: Client) -> None:
    frames = client.feed(HEADER_091)
    assert len(frames) == 1 and frames[0].channel_number == 0
    start = frames[0].method
    assert isinstance(start, S.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == b"PLAIN AMQPLAIN"
    assert start.locales == b"en_US"
    props = start.server_properties
    # Capabilities first, then the string properties in key order (RabbitMQ usorts them).
    assert list(props) == [
        "capabilities",
        "cluster_name",
        "copyright",
        "information",
        "platform",
        "product",
        "version",
    ]
    assert props["capabilities"] == {name: True for name in SERVER_CAPABILITIES}
    assert list(props["capabilities"]) == [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ]
    assert props["product"] == "amqpd"
    assert props["platform"].startswith("Python ")


@pytest.mark.parametrize(
    "header",
    [
        b"HTTP/1.1",
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x00\x00\x09\x02",
        b"AMQP\x00\x00\x0a\x00",
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL: not served
        b"\x16\x03\x01\x02\x00\x01\x00\x01",  # a TLS ClientHello
    ],
)
def test_bad_header_gets_ours_back_and_close(client: Client, header: bytes) -> None:
    assert client.conn.receive_data(header, 0.0) is None
    assert client.conn.data_to_send() == HEADER_091
    assert client.conn.closed


def test_amqp_0_9_header_is_served_as_0_9_1(client: Client) -> None:
    frames = client.feed(b"AMQP\x01\x01\x00\x09")
    start = frames[0].method
    assert isinstance(start, S.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.server_properties["capabilities"]["publisher_confirms"] is True


@pytest.mark.parametrize("header", [b"AMQP\x01\x01\x08\x00", b"AMQP\x01\x01\x09\x01"])
def test_amqp_0_8_headers_get_version_8_0_without_capabilities(
    client: Client, header: bytes
) -> None:
    # RabbitMQ 3.13 serves 0-8 (dropped in 4.0); it advertises no capabilities to it.
    start = client.feed(header)[0].method
    assert (start.version_major, start.version_minor) == (8, 0)
    assert start.server_properties["capabilities"] == {}
    assert isinstance(client.start_ok()[0].method, S.Connection.Tune)


def test_short_header_then_eof_closes_silently(client: Client) -> None:
    assert client.feed(b"AMQP") == []
    assert not client.conn.closed
    assert client.feed(b"") == []
    assert client.conn.closed


def test_eof_before_anything(client: Client) -> None:
    assert client.feed(b"") == []
    assert client.conn.closed


def test_header_byte_by_byte(client: Client) -> None:
    for byte in HEADER_091[:-1]:
        assert client.feed(bytes([byte])) == []
    frames = client.feed(HEADER_091[-1:])
    assert isinstance(frames[0].method, S.Connection.Start)


def test_pipelined_handshake_in_one_chunk(client: Client) -> None:
    data = (
        HEADER_091
        + encode(0, S.Connection.StartOk({}, "PLAIN", b"\0guest\0guest"))
        + encode(0, S.Connection.TuneOk(2047, 131072, 0))
        + encode(0, S.Connection.Open("/"))
        + encode(1, S.Channel.Open())
    )
    frames = client.feed(data)
    assert [type(f.method) for f in frames] == [
        S.Connection.Start,
        S.Connection.Tune,
        S.Connection.OpenOk,
        S.Channel.OpenOk,
    ]
    assert frames[-1].channel_number == 1


@given(cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=30))
def test_handshake_output_does_not_depend_on_chunking(cuts: list[int]) -> None:
    data = (
        HEADER_091
        + encode(0, S.Connection.StartOk({}, "PLAIN", b"\0guest\0guest"))
        + encode(0, S.Connection.TuneOk(10, 65536, 0))
        + encode(0, S.Connection.Open("/"))
        + encode(1, S.Channel.Open())
        + encode(1, S.Basic.Qos(0, 10, False))
    )
    whole = Client()
    expected = whole.feed(data)
    pieces = Client()
    got: list[Any] = []
    pos = 0
    for cut in cuts:
        got += pieces.feed(data[pos : pos + cut])
        pos += cut
    got += pieces.feed(data[pos:])
    assert [(f.channel_number, type(f.method)) for f in got] == [
        (f.channel_number, type(f.method)) for f in expected
    ]
    assert len(got) == 5


# ------------------------------------------------------------------ authentication


def test_plain_login_gets_tune(client: Client) -> None:
    client.feed(HEADER_091)
    frames = client.start_ok(b"\0guest\0guest")
    tune = frames[0].method
    assert isinstance(tune, S.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert client.conn.user.name == "guest"
    assert client.conn.auth_mechanism == "PLAIN"


def test_amqplain_login(client: Client) -> None:
    client.feed(HEADER_091)
    # A field table without its length prefix (RabbitMQ's and Qpid's AMQPLAIN).
    response = b"\x05LOGINS\x00\x00\x00\x03bob\x08PASSWORDS\x00\x00\x00\x06secret"
    frames = client.start_ok(response, mechanism="AMQPLAIN")
    assert isinstance(frames[0].method, S.Connection.Tune)
    assert client.conn.user.name == "bob"


def test_client_properties_and_capabilities_are_kept(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok(capabilities={"consumer_cancel_notify": True, "basic.nack": True})
    assert client.conn.client_properties["product"] == "test"
    assert client.conn.capabilities == {"consumer_cancel_notify": True, "basic.nack": True}


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        ("PLAIN", b"\0guest\0wrong"),
        ("PLAIN", b"\0nobody\0guest"),
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x01x"),
        # A non-string PASSWORD with a string LOGIN: RabbitMQ tries the login, which fails.
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDI\x00\x00\x00\x05"),
    ],
)
def test_refused_login_with_authentication_failure_close(
    client: Client, mechanism: str, response: bytes
) -> None:
    client.feed(HEADER_091, at=1.0)
    frames = client.start_ok(
        response, mechanism=mechanism, capabilities={"authentication_failure_close": True}
    )
    assert close_of(frames) == (403, REFUSED_TEXT.format(mechanism), 0, 0)
    # The socket stays until SILENT_CLOSE_DELAY, or the client's close-ok (oracle: at once).
    assert_silent_close(client, [], 1.0)


def test_refused_login_close_ok_ends_it_at_once(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok(b"\0guest\0x", capabilities={"authentication_failure_close": True})
    assert client.send(0, S.Connection.CloseOk()) == []
    assert client.conn.closed


def test_refused_login_without_the_capability_is_silent(client: Client) -> None:
    client.feed(HEADER_091, at=5.0)
    frames = client.start_ok(b"\0guest\0wrong")
    assert_silent_close(client, frames, 5.0)


def test_capability_must_be_boolean_true(client: Client) -> None:
    client.feed(HEADER_091)
    frames = client.start_ok(b"\0guest\0wrong", capabilities={"authentication_failure_close": 1})
    assert frames == []


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.168.0.7", "2001:db8::1", "host.example"])
def test_guest_is_loopback_only(peer: str) -> None:
    c = Client(peer=peer)
    c.feed(HEADER_091)
    frames = c.start_ok(capabilities={"authentication_failure_close": True})
    assert close_of(frames) == (403, REFUSED_TEXT.format("PLAIN"), 0, 0)
    assert c.conn.user is None


@pytest.mark.parametrize("peer", [None, "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_guest_from_loopback(peer: str | None) -> None:
    c = Client(peer=peer)
    c.feed(HEADER_091)
    assert isinstance(c.start_ok()[0].method, S.Connection.Tune)


def test_other_users_may_connect_remotely() -> None:
    c = Client(peer="10.1.2.3")
    c.feed(HEADER_091)
    assert isinstance(c.start_ok(b"\0bob\0secret")[0].method, S.Connection.Tune)


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        ("FOO", b"\0guest\0guest"),  # 503 unknown authentication mechanism
        ("plain", b"\0guest\0guest"),  # names are case-sensitive
        ("EXTERNAL", b""),
        ("PLAIN", b"guest\0guest"),  # 502: RabbitMQ wants exactly \0user\0pass
        ("PLAIN", b"guest\0guest\0guest"),  # no authorization identity either
        ("PLAIN", b"\0guest\0guest\0"),
        ("PLAIN", b""),
        ("AMQPLAIN", b"\x00\x00\x00\x26\x05LOGINS\x00\x00\x00\x05guest"),  # with a length
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x05guest"),  # no PASSWORD
        ("AMQPLAIN", b"\x05LOGINI\x00\x00\x00\x01\x08PASSWORDI\x00\x00\x00\x01"),  # no string
    ],
)
def test_bad_mechanism_or_response_is_a_silent_close(
    client: Client, mechanism: str, response: bytes
) -> None:
    client.feed(HEADER_091, at=2.0)
    # Even with authentication_failure_close: these are not login refusals.
    frames = client.start_ok(
        response, mechanism=mechanism, capabilities={"authentication_failure_close": True}
    )
    assert_silent_close(client, frames, 2.0)


def test_mechanism_not_offered_by_config() -> None:
    c = Client(config=ConnectionConfig(auth_mechanisms=("PLAIN",)))
    start = c.feed(HEADER_091)[0].method
    assert start.mechanisms == b"PLAIN"
    response = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
    assert_silent_close(c, c.start_ok(response, mechanism="AMQPLAIN"), 0.0)


def test_input_after_a_silent_close_decision_is_ignored(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok(b"\0guest\0wrong")
    assert client.send(0, S.Connection.TuneOk(2047, 131072, 0)) == []
    assert client.send(0, S.Connection.Open("/")) == []
    assert client.send(0, S.Connection.Close(200, "", 0, 0)) == []
    assert not client.conn.closed


# ------------------------------------------------------------------ tune


@pytest.mark.parametrize(
    ("channel_max", "frame_max"),
    [
        (0, 131072),  # "negotiated channel_max = 0 (no limit) is higher than ... (2047)"
        (2048, 131072),
        (65535, 131072),
        (2047, 0),  # frame_max 0 = no limit: above the server's 131072
        (2047, 4095),  # below FRAME_MIN_SIZE
        (2047, 131073),
    ],
)
def test_tune_ok_out_of_limits_is_a_silent_close(
    client: Client, channel_max: int, frame_max: int
) -> None:
    # rabbit_reader raises the 530 with method 'connection.tune' set, which its
    # handle_method0 does not catch as an amqp_error: the oracle closes silently after 3 s.
    client.feed(HEADER_091)
    client.start_ok()
    frames = client.send(0, S.Connection.TuneOk(channel_max, frame_max, 0), at=4.0)
    assert_silent_close(client, frames, 4.0)


def test_tune_ok_smallest_limits(client: Client) -> None:
    client.handshake(channel_max=1, frame_max=4096)
    assert (client.conn.channel_max, client.conn.frame_max) == (1, 4096)


def test_negotiated_frame_max_applies_to_reading(client: Client) -> None:
    client.handshake(frame_max=4096)
    client.open_channel(1)
    publish = encode(1, S.Basic.Publish(exchange="", routing_key="q"))
    header = bytes(pika.frame.Header(1, 5000, S.BasicProperties()).marshal())
    # A body frame whose 7-octet header claims 5000 octets: refused before any payload.
    frames = client.feed(publish + header + b"\x03\x00\x01\x00\x00\x13\x88", at=7.0)
    code, text, class_id, method_id = close_of(frames)
    assert (code, class_id, method_id) == (501, 0, 0)
    assert text == "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,5000,4088}"
    # Fatal: nothing more is read (not even close-ok); the socket goes 3 s later.
    assert client.send(0, S.Connection.CloseOk()) == []
    assert not client.conn.closed
    client.tick(10.0)
    assert client.conn.closed


def test_frames_before_tune_ok_are_limited_to_frame_min_size(client: Client) -> None:
    client.feed(HEADER_091)
    huge = {"product": "x" * 5000}
    frames = client.send(0, S.Connection.StartOk(huge, "PLAIN", b"\0guest\0guest"), at=1.0)
    assert_silent_close(client, frames, 1.0)


# ------------------------------------------------------------------ open


def test_open_unknown_vhost_gets_530_and_waits_for_close_ok(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok()
    client.send(0, S.Connection.TuneOk(2047, 131072, 0))
    frames = client.send(0, S.Connection.Open("nope"), at=10.0)
    assert close_of(frames) == (530, "NOT_ALLOWED - vhost nope not found", 10, 40)
    assert not client.conn.closed
    assert client.send(0, S.Connection.CloseOk()) == []
    assert client.conn.closed


def test_open_unknown_vhost_times_out_after_closing_timeout(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok()
    client.send(0, S.Connection.TuneOk(2047, 131072, 0))
    client.send(0, S.Connection.Open("nope"), at=1.0)
    # heartbeat 0: CLOSING_TIMEOUT (30 s); the handshake timeout no longer applies.
    assert client.conn.next_deadline() == pytest.approx(31.0)
    client.tick(30.9)
    assert not client.conn.closed
    client.tick(31.0)
    assert client.conn.closed


def test_open_other_vhost(client: Client) -> None:
    client.handshake(vhost="other")
    assert client.conn.vhost is client.broker.vhosts["other"]


@pytest.mark.parametrize(
    ("method", "ids"),
    [
        (S.Connection.Close(200, "", 0, 0), (10, 50)),
        (S.Connection.UpdateSecret(b"x", "r"), (10, 70)),
        (S.Connection.TuneOk(2047, 131072, 0), (10, 31)),
    ],
)
def test_unexpected_method_while_opening_gets_504(
    client: Client, method: object, ids: tuple[int, int]
) -> None:
    client.feed(HEADER_091)
    client.start_ok()
    client.send(0, S.Connection.TuneOk(2047, 131072, 0))
    frames = client.send(0, method)
    assert close_of(frames) == (
        504,
        "CHANNEL_ERROR - unexpected method in connection state opening",
        *ids,
    )


def test_channel_frame_while_opening_gets_505(client: Client) -> None:
    client.feed(HEADER_091)
    client.start_ok()
    client.send(0, S.Connection.TuneOk(2047, 131072, 0))
    frames = client.send(1, S.Channel.Open())
    assert close_of(frames) == (
        505,
        "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,0>>",
        0,
        0,
    )


@pytest.mark.parametrize(
    "data",
    [
        encode(0, S.Connection.Open("/")),  # before tune-ok: 504 in state tuning, silent
        encode(0, S.Connection.Close(200, "", 0, 0)),
        encode(1, S.Channel.Open()),
        b"\x08\x00\x01\x00\x00\x00\x00\xce",  # heartbeat on channel 1
    ],
)
def test_errors_while_tuning_are_silent(client: Client, data: bytes) -> None:
    client.feed(HEADER_091)
    client.start_ok()
    assert_silent_close(client, client.feed(data, at=3.0), 3.0)


def test_errors_while_starting_are_silent(client: Client) -> None:
    client.feed(HEADER_091)
    assert_silent_close(client, client.send(0, S.Connection.Close(200, "", 0, 0)), 0.0)


def test_heartbeat_while_starting_is_fine(client: Client) -> None:
    client.feed(HEADER_091)
    assert client.feed(b"\x08\x00\x00\x00\x00\x00\x00\xce") == []
    assert isinstance(client.start_ok()[0].method, S.Connection.Tune)


# ------------------------------------------------------------------ handshake timeout


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_handshake_timeout(steps: int) -> None:
    c = Client(now=100.0)
    if steps >= 1:
        c.feed(HEADER_091)
    if steps >= 2:
        c.start_ok()
    if steps >= 3:
        c.send(0, S.Connection.TuneOk(2047, 131072, 0))
    assert c.conn.next_deadline() == pytest.approx(110.0)
    c.tick(109.99)
    assert not c.conn.closed
    assert c.tick(110.0) == []
    assert c.conn.closed


def test_no_handshake_timeout_once_open(running: Client) -> None:
    assert running.conn.next_deadline() is None
    running.tick(1000.0)
    assert not running.conn.closed


def test_decoding_with_pika_sanity() -> None:
    # The helper decodes what pika encodes (guards the test harness itself).
    data = encode(0, S.Connection.CloseOk())
    assert isinstance(decode_all(data)[0].method, S.Connection.CloseOk)
    assert FakeBroker().authenticate("guest", "guest") is not None


def test_external_with_a_certificate_that_names_nobody_is_offered_then_refused() -> None:
    # rabbit_auth_mechanism_ssl offers EXTERNAL for any verified certificate; one that
    # names nobody (ssl_cert_login_from = common_name, no CN) is refused at start-ok
    # ("no name found" in the log), as an unknown user is.
    from amqpd.session.connection import Connection

    from .conftest import FakeChannel

    config = ConnectionConfig(auth_mechanisms=("PLAIN", "EXTERNAL"))
    c = Client(config=config)
    c.conn = Connection(
        c.broker, now=0.0, config=config, channel_factory=FakeChannel, peer_certificate=""
    )
    assert c.feed(HEADER_091)[0].method.mechanisms == b"PLAIN EXTERNAL"
    frames = c.start_ok(
        b"", mechanism="EXTERNAL", capabilities={"authentication_failure_close": True}
    )
    assert close_of(frames) == (403, REFUSED_TEXT.format("EXTERNAL"), 0, 0)
