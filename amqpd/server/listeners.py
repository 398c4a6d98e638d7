"""Listen addresses: parsing ``--listen`` values and opening the listening sockets.

Rules of this module:
- ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or bare ``PORT``; no host means every interface.
- "Every interface" binds ``0.0.0.0`` and ``::`` separately with ``IPV6_V6ONLY`` (trio sets it),
  as RabbitMQ does, so the two sockets never clash; the IPv6 half is optional because a machine
  or container without IPv6 must still start.
- Port 0 lets the kernel pick; for "every interface" the IPv6 socket then tries the port the
  IPv4 one got, so a single ``:0`` listener ends up on one port where possible.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

import attrs
import structlog
import trio

DEFAULT_PORT = 5672

log = structlog.get_logger("amqpd.server")


@attrs.frozen
class ListenAddress:
    """One ``--listen`` value. ``host is None`` means every IPv4 and IPv6 interface."""

    host: str | None
    port: int

    def __str__(self) -> str:
        if self.host is None:
            return f"*:{self.port}"
        return format_hostport(self.host, self.port)


DEFAULT_LISTEN = (ListenAddress(None, DEFAULT_PORT),)


def format_hostport(host: str, port: int) -> str:
    """``127.0.0.1:5672`` / ``[::1]:5672``: the form ``--listen`` accepts and logs print."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(value: str) -> ListenAddress:
    """Parse one ``--listen`` value; raises ``ValueError`` with a message fit for users."""
    text = value.strip()
    if not text:
        raise ValueError("empty listen address")
    host: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"bad listen address {value!r}: expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
        if not host:
            raise ValueError(f"bad listen address {value!r}: empty IPv6 host")
    elif text.isdigit():
        host, port_text = None, text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad listen address {value!r}: expected HOST:PORT")
        if ":" in host:
            # A bare IPv6 literal is ambiguous ("::1:5672"); insist on brackets like RabbitMQ.
            raise ValueError(f"bad listen address {value!r}: write IPv6 hosts as [HOST]:PORT")
        host = host or None
    if not port_text.isdigit():
        raise ValueError(f"bad listen address {value!r}: port must be a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"bad listen address {value!r}: port must be 0-65535")
    return ListenAddress(host, port)


def bound_address(listener: trio.SocketListener) -> str:
    """The address a listener actually bound, as ``host:port`` (port 0 resolved)."""
    sockname = listener.socket.getsockname()
    return format_hostport(str(sockname[0]), int(sockname[1]))


class ListenError(Exception):
    """A listen address could not be bound; the message names the address and the reason."""


async def open_listeners(addresses: Sequence[ListenAddress]) -> list[trio.SocketListener]:
    """Bind every address; on failure close what was opened and raise ``ListenError``."""
    opened: list[trio.SocketListener] = []
    try:
        for address in addresses:
            try:
                opened.extend(await _open_one(address))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ListenError(f"cannot listen on {address}: {reason}") from exc
    except BaseException:
        for listener in opened:
            await listener.aclose()
        raise
    return opened


async def _open_one(address: ListenAddress) -> list[trio.SocketListener]:
    if address.host is not None:
        return await trio.open_tcp_listeners(address.port, host=address.host)
    listeners = await trio.open_tcp_listeners(address.port, host="0.0.0.0")
    port = address.port or listeners[0].socket.getsockname()[1]
    try:
        try:
            listeners += await trio.open_tcp_listeners(port, host="::")
        except OSError as exc:
            if address.port != 0 or exc.errno != errno.EADDRINUSE:
                raise
            # The port the kernel gave us on IPv4 is taken on IPv6: any free port will do.
            listeners += await trio.open_tcp_listeners(0, host="::")
    except OSError as exc:
        if not isinstance(exc, socket.gaierror) and exc.errno not in _NO_IPV6_ERRNOS:
            for listener in listeners:
                await listener.aclose()
            raise
        # No IPv6 on this machine (or in this container): IPv4 alone is fine.
        log.warning("ipv6 listener unavailable", port=port, error=str(exc))
    return listeners


# What binding "::" fails with where IPv6 is compiled out, disabled or unconfigured.
_NO_IPV6_ERRNOS = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})
