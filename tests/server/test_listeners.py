"""Binding real loopback sockets: addresses, port 0, IPv6, TCP_NODELAY, bind errors."""

from __future__ import annotations

import socket

import pytest
import trio

from amqpd.server import ListenAddress, ListenError, Server, open_listeners


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback here")


async def _close_all(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        await listener.aclose()


async def test_port_zero_binds_a_free_port():
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    try:
        (listener,) = listeners
        host, port = listener.socket.getsockname()
        assert host == "127.0.0.1" and port != 0
    finally:
        await _close_all(listeners)


@needs_ipv6
async def test_ipv6_loopback():
    listeners = await open_listeners([ListenAddress("::1", 0)])
    try:
        assert listeners[0].socket.family == socket.AF_INET6
        server = Server(listeners, lambda now, peer: None)  # type: ignore[arg-type, return-value]
        assert server.addresses[0].startswith("[::1]:")
    finally:
        await _close_all(listeners)


@needs_ipv6
async def test_every_interface_binds_ipv4_and_ipv6_on_one_port():
    listeners = await open_listeners([ListenAddress(None, 0)])
    try:
        families = sorted(x.socket.family for x in listeners)
        assert families == sorted([socket.AF_INET, socket.AF_INET6])
        ports = {x.socket.getsockname()[1] for x in listeners}
        assert len(ports) == 1
        v6 = next(x for x in listeners if x.socket.family == socket.AF_INET6)
        # V6ONLY keeps "::" from also claiming IPv4, which would clash with "0.0.0.0".
        assert v6.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        await _close_all(listeners)


async def test_a_port_in_use_is_a_listen_error_naming_the_address():
    first = await open_listeners([ListenAddress("127.0.0.1", 0)])
    port = first[0].socket.getsockname()[1]
    try:
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: .*in use"):
            await open_listeners([ListenAddress("127.0.0.2", 0), ListenAddress("127.0.0.1", port)])
    finally:
        await _close_all(first)


async def test_accepted_socket_is_served_with_its_peer_address(nursery):
    seen: list[str | None] = []

    class Conn:
        on_output = None
        closed = False

        def receive_data(self, data: bytes, now: float) -> None:
            self.closed = True

        def data_to_send(self) -> bytes:
            return b"bye"

        def next_deadline(self) -> float | None:
            return None

        def tick(self, now: float) -> None: ...

        def shutdown(self, now: float) -> None: ...

        def connection_lost(self) -> None: ...

    def factory(now: float, peer: str | None) -> Conn:
        seen.append(peer)
        return Conn()

    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    server = await nursery.start(Server(listeners, factory).run)
    host, port = server.addresses[0].rsplit(":", 1)
    client = await trio.open_tcp_stream(host, int(port))
    with trio.fail_after(10):
        await client.send_all(b"hi")
        data = b""
        while chunk := await client.receive_some():
            data += chunk
    assert data == b"bye"
    local = client.socket.getsockname()
    assert seen == [local[0]]  # the bare address: the session checks it for loopback
    server.shutdown()
