"""Pure pieces of the connection handshake: protocol header, SASL responses, tune-ok limits.

Rules of this module:
- Functions only, no connection state: the ``Connection`` calls them and decides what an
  error means in its current state (``rabbit_reader:handle_exception/3``).
- Errors are the exact ``AMQPError``s RabbitMQ raises at the same points
  (``rabbit_reader``, ``rabbit_auth_mechanism_plain``, ``rabbit_auth_mechanism_amqplain``);
  most of them end in a silent close, so their texts mostly reach the log, not the client.
"""

from __future__ import annotations

import ipaddress
import struct

import attrs

from amqpd.errors import CommandInvalid, NotAllowed, SyntaxError
from amqpd.protocol._erl import format_binary
from amqpd.protocol.constants import FRAME_MIN_SIZE, PROTOCOL_HEADER
from amqpd.protocol.fieldtable import decode_table
from amqpd.session.config import ConnectionConfig

#: Protocol headers RabbitMQ 3.13 accepts (rabbit_reader:handshake/2) and the protocol version
#: its connection.start then announces. 0-9 ("AMQP" 1 1 0 9) is served as 0-9-1. The two 0-8
#: headers get version 8-0 and an empty capabilities table, as RabbitMQ sends them; after
#: that we speak 0-9-1 framing, which agrees with 0-8 for the methods such clients use
#: (RabbitMQ 3.13 has a separate 0-8 method table; 4.x dropped 0-8 altogether).
ACCEPTED_HEADERS: dict[bytes, tuple[int, int]] = {
    PROTOCOL_HEADER: (0, 9),
    b"AMQP\x01\x01\x00\x09": (0, 9),
    b"AMQP\x01\x01\x08\x00": (8, 0),
    b"AMQP\x01\x01\x09\x01": (8, 0),
}

#: SASL mechanisms this broker implements (rabbit_registry auth_mechanism entries; EXTERNAL
#: is rabbitmq_auth_mechanism_ssl: the user named by the client certificate).
KNOWN_MECHANISMS = frozenset({"PLAIN", "AMQPLAIN", "EXTERNAL"})

#: rabbit_reader ?CHANNEL_MIN: a tune-ok channel_max below this is refused.
CHANNEL_MIN = 1


def negotiate_version(header: bytes) -> tuple[int, int] | None:
    """The (major, minor) to announce for this 8-octet header, or None to refuse it."""
    return ACCEPTED_HEADERS.get(header)


@attrs.frozen
class Credentials:
    """What a SASL response carried. ``password is None``: unusable (never authenticates)."""

    username: str
    password: str | None


def offered_mechanisms(config: ConnectionConfig, has_peer_certificate: bool) -> tuple[str, ...]:
    """What connection.start offers this connection (rabbit_reader:auth_mechanisms/1).

    A mechanism is offered only where it can work: EXTERNAL needs a verified client
    certificate (rabbit_auth_mechanism_ssl:should_offer/1).
    """
    return tuple(m for m in config.auth_mechanisms if m != "EXTERNAL" or has_peer_certificate)


def check_mechanism(
    mechanism: str, config: ConnectionConfig, offered: tuple[str, ...] | None = None
) -> None:
    """503 for a mechanism we do not know or do not offer (auth_mechanism_to_module/2)."""
    if mechanism not in KNOWN_MECHANISMS:
        raise CommandInvalid(f"unknown authentication mechanism '{mechanism}'")
    if mechanism not in (offered if offered is not None else config.auth_mechanisms):
        raise CommandInvalid(f"invalid authentication mechanism '{mechanism}'")


def parse_response(mechanism: str, response: bytes) -> Credentials:
    """Decode a start-ok response for ``mechanism`` (already checked); 502 when malformed."""
    if mechanism == "PLAIN":
        return parse_plain(response)
    return parse_amqplain(response)


def _text(raw: bytes) -> str:
    # RabbitMQ compares credentials as binaries; surrogateescape keeps every octet, so a
    # name that is not UTF-8 simply matches no user instead of raising.
    return raw.decode("utf-8", "surrogateescape")


def parse_plain(response: bytes) -> Credentials:
    """SASL PLAIN (RFC 4616) as RabbitMQ reads it: exactly ``\\0user\\0pass``.

    RabbitMQ does not accept an authorization identity before the first NUL, nor a third
    NUL: both are "response ... invalid" (rabbit_auth_mechanism_plain:extract_user_pass/1).
    """
    parts = response.split(b"\x00")
    if len(parts) != 3 or parts[0] != b"":
        raise SyntaxError(f"response {format_binary(response)} invalid")
    return Credentials(_text(parts[1]), _text(parts[2]))


def parse_amqplain(response: bytes) -> Credentials:
    """AMQPLAIN: a field table *without* its 4-octet length prefix, with LOGIN and PASSWORD.

    RabbitMQ (rabbit_auth_mechanism_amqplain) authenticates when both keys exist and at
    least one of them is a string; a non-string value then just fails the login.
    """
    try:
        table, _ = decode_table(struct.pack(">I", len(response)) + response, 0)
    except Exception:  # any malformed table: RabbitMQ's parser crashes, the login fails
        raise SyntaxError(f"AMQPLAIN auth info {format_binary(response)} is invalid") from None
    if "LOGIN" not in table or "PASSWORD" not in table:
        raise SyntaxError(f"AMQPLAIN auth info {table!r} is missing LOGIN or PASSWORD field")
    login, password = table["LOGIN"], table["PASSWORD"]
    strings = (str, bytes)
    if not isinstance(login, strings) and not isinstance(password, strings):
        raise SyntaxError(
            f"AMQPLAIN auth info {table!r} uses unsupported type for LOGIN or PASSWORD field"
        )
    username = login if isinstance(login, str) else _text(login) if isinstance(login, bytes) else ""
    if isinstance(password, str):
        return Credentials(username, password)
    if isinstance(password, bytes):
        return Credentials(username, _text(password))
    return Credentials(username, None)


def check_tune_ok(config: ConnectionConfig, channel_max: int, frame_max: int) -> None:
    """530 when tune-ok asks for more than we offered (validate_negotiated_integer_value/3).

    A client value of 0 means "no limit", which is above any limit the server set, so it is
    refused too. frame_max must also be at least FRAME_MIN_SIZE (spec: frame-min-size).
    """
    _validate("frame_max", FRAME_MIN_SIZE, config.frame_max, frame_max)
    _validate("channel_max", CHANNEL_MIN, config.channel_max, channel_max)


def _validate(field: str, minimum: int, server_value: int, client_value: int) -> None:
    if client_value != 0 and client_value < minimum:
        _fail(field, "lower", "minimum", minimum, client_value)
    if server_value != 0 and (client_value == 0 or client_value > server_value):
        _fail(field, "higher", "maximum", server_value, client_value)


def _fail(field: str, s1: str, s2: str, limit: int, client_value: int) -> None:
    detail = " (no limit)" if field == "channel_max" and client_value == 0 else ""
    # fail_negotiation/4 names connection.tune (10, 30) as the offending method.
    raise NotAllowed(
        f"negotiated {field} = {client_value}{detail} is {s1} than the {s2} allowed value "
        f"({limit})",
        class_id=10,
        method_id=30,
    )


def is_loopback(peer: str | None) -> bool:
    """Whether the peer address is loopback (rabbit_net:is_loopback/1).

    ``None`` is an in-process connection (tests, embedding), which counts as local.
    """
    if peer is None:
        return True
    host = peer.split("%", 1)[0]  # an IPv6 zone id is not part of the address
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
