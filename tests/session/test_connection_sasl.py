"""Unit tests of the pure handshake helpers (amqpd.session.handshake) and server properties."""

from __future__ import annotations

import pytest

from amqpd.errors import CommandInvalid, NotAllowed, SyntaxError
from amqpd.protocol.fieldtable import encode_table
from amqpd.session import handshake
from amqpd.session.config import ConnectionConfig
from amqpd.session.handshake import Credentials


def test_plain() -> None:
    assert handshake.parse_plain(b"\0guest\0guest") == Credentials("guest", "guest")
    assert handshake.parse_plain(b"\0\0") == Credentials("", "")
    assert handshake.parse_plain(b"\0us\xc3\xa9r\0p\xffw") == Credentials(
        "usér", "p\udcffw"
    )  # non-UTF-8 kept, never raises


@pytest.mark.parametrize(
    "response", [b"", b"guest", b"\0guest", b"a\0guest\0guest", b"\0a\0b\0", b"\0a\0b\0c"]
)
def test_plain_malformed(response: bytes) -> None:
    with pytest.raises(SyntaxError) as info:
        handshake.parse_plain(response)
    assert info.value.reply_code == 502
    assert "invalid" in info.value.detail


def test_amqplain_is_a_table_without_its_length() -> None:
    body = encode_table({"LOGIN": "bob", "PASSWORD": "secret"})[4:]
    assert handshake.parse_amqplain(body) == Credentials("bob", "secret")


def test_amqplain_non_string_password_cannot_log_in() -> None:
    body = encode_table({"LOGIN": "bob", "PASSWORD": 5})[4:]
    assert handshake.parse_amqplain(body) == Credentials("bob", None)


@pytest.mark.parametrize(
    "table",
    [{"LOGIN": "bob"}, {"PASSWORD": "x"}, {}, {"LOGIN": 1, "PASSWORD": 2}],
)
def test_amqplain_malformed(table: dict[str, object]) -> None:
    with pytest.raises(SyntaxError):
        handshake.parse_amqplain(encode_table(table)[4:])  # type: ignore[arg-type]


def test_amqplain_garbage() -> None:
    with pytest.raises(SyntaxError):
        handshake.parse_amqplain(b"\x05LOGINS\x00\x00\xff\xff")


def test_mechanisms() -> None:
    config = ConnectionConfig(auth_mechanisms=("PLAIN",))
    handshake.check_mechanism("PLAIN", config)
    with pytest.raises(CommandInvalid, match="unknown authentication mechanism 'X'"):
        handshake.check_mechanism("X", config)
    with pytest.raises(CommandInvalid, match="invalid authentication mechanism 'AMQPLAIN'"):
        handshake.check_mechanism("AMQPLAIN", config)


@pytest.mark.parametrize(
    ("channel_max", "frame_max", "text"),
    [
        (
            0,
            131072,
            "negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)",
        ),
        (
            2048,
            131072,
            "negotiated channel_max = 2048 is higher than the maximum allowed value (2047)",
        ),
        (2047, 4095, "negotiated frame_max = 4095 is lower than the minimum allowed value (4096)"),
        (2047, 0, "negotiated frame_max = 0 is higher than the maximum allowed value (131072)"),
    ],
)
def test_tune_ok_limits(channel_max: int, frame_max: int, text: str) -> None:
    with pytest.raises(NotAllowed) as info:
        handshake.check_tune_ok(ConnectionConfig(), channel_max, frame_max)
    assert info.value.detail == text
    assert (info.value.class_id, info.value.method_id) == (10, 30)


def test_tune_ok_server_without_limits() -> None:
    config = ConnectionConfig(channel_max=0, frame_max=0)
    handshake.check_tune_ok(config, 0, 0)
    handshake.check_tune_ok(config, 65535, 1 << 30)
    with pytest.raises(NotAllowed):
        handshake.check_tune_ok(config, 1, 100)


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (None, True),
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # the server passes addresses, never names
        ("", False),
    ],
)
def test_is_loopback(peer: str | None, loopback: bool) -> None:
    assert handshake.is_loopback(peer) is loopback


def test_headers() -> None:
    assert handshake.negotiate_version(b"AMQP\x00\x00\x09\x01") == (0, 9)
    assert handshake.negotiate_version(b"AMQP\x01\x01\x00\x09") == (0, 9)
    assert handshake.negotiate_version(b"AMQP\x01\x01\x08\x00") == (8, 0)
    assert handshake.negotiate_version(b"AMQP\x01\x01\x09\x01") == (8, 0)
    assert handshake.negotiate_version(b"AMQP\x00\x00\x09\x00") is None


def test_server_properties_can_be_configured() -> None:
    props = ConnectionConfig(
        product="RabbitMQ", version="3.13.7", cluster_name="c"
    ).server_properties()
    assert (props["product"], props["version"], props["cluster_name"]) == (
        "RabbitMQ",
        "3.13.7",
        "c",
    )
