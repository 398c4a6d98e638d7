"""A tiny raw-socket AMQP 0-9-1 client for protocol-level interop tests.

Frames are encoded and decoded with ``pika.spec`` / ``pika.frame`` so these tests do not depend
on amqpd's own codec.  Everything here is blocking and every read has a bounded timeout.

Typical use::

    with RawConnection.from_url(amqp_url) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, spec.Basic.Publish(exchange="", routing_key="q", immediate=True))
        close = c.expect_connection_close()
        assert close.reply_code == 540
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pika import frame as pframe
from pika import spec

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"
DEFAULT_TIMEOUT = 5.0


class ConnectionClosedByPeer(Exception):
    """The server closed the TCP connection (EOF or reset)."""


@dataclass
class UrlParts:
    host: str
    port: int
    username: str
    password: str
    vhost: str


def parse_url(url: str) -> UrlParts:
    u = urllib.parse.urlparse(url)
    vhost_path = u.path[1:] if u.path.startswith("/") else u.path
    vhost = urllib.parse.unquote(vhost_path) if u.path else "/"
    if u.path in ("", "/"):
        vhost = "/"
    return UrlParts(
        host=u.hostname or "127.0.0.1",
        port=u.port or 5672,
        username=urllib.parse.unquote(u.username or "guest"),
        password=urllib.parse.unquote(u.password or "guest"),
        vhost=vhost,
    )


def raw_frame(frame_type: int, channel: int, payload: bytes, end: bytes = FRAME_END) -> bytes:
    """Build a frame by hand (to produce malformed ones)."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + end


def method_payload(method: Any) -> bytes:
    return struct.pack(">I", method.INDEX) + b"".join(method.encode())


def amqplain_response(username: str, password: str) -> bytes:
    """AMQPLAIN response: a field table *without* its 4-byte length prefix."""
    pieces: list[bytes] = []
    from pika import data as pdata

    pdata.encode_table(pieces, {"LOGIN": username, "PASSWORD": password})
    return b"".join(pieces)[4:]


@dataclass
class Close:
    reply_code: int
    reply_text: str
    class_id: int
    method_id: int


@dataclass
class Handshake:
    start: Any  # spec.Connection.Start
    tune: Any  # spec.Connection.Tune
    frame_max: int = 0
    channel_max: int = 0
    heartbeat: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class RawConnection:
    def __init__(self, host: str, port: int, username: str = "guest", password: str = "guest",
                 vhost: str = "/", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host, self.port = host, port
        self.username, self.password, self.vhost = username, password, vhost
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.hs: Handshake | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float = DEFAULT_TIMEOUT) -> RawConnection:
        p = parse_url(url)
        return cls(p.host, p.port, p.username, p.password, p.vhost, timeout)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_socket()

    def close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- low level -----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, f: Any) -> None:
        self.send(f.marshal())

    def send_method(self, channel: int, method: Any) -> None:
        self.send(pframe.Method(channel, method).marshal())

    def send_content(self, channel: int, body: bytes, props: spec.BasicProperties | None = None,
                     frame_max: int | None = None) -> None:
        props = props or spec.BasicProperties()
        self.send(pframe.Header(channel, len(body), props).marshal())
        fm = frame_max or (self.hs.frame_max if self.hs else 131072)
        chunk = fm - 8
        for i in range(0, len(body), chunk):
            self.send(pframe.Body(channel, body[i:i + chunk]).marshal())

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server within timeout")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError as e:
            raise TimeoutError("no data from server within timeout") from e
        except (ConnectionResetError, BrokenPipeError) as e:
            raise ConnectionClosedByPeer(str(e)) from e
        if not data:
            raise ConnectionClosedByPeer("EOF")
        self.buf += data

    def recv_exact(self, n: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_all_until_eof(self, timeout: float | None = None) -> bytes:
        """Read everything until the server closes the socket (TimeoutError if it doesn't)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            try:
                self._fill(deadline)
            except ConnectionClosedByPeer:
                out, self.buf = self.buf, b""
                return out

    def read_frame(self, timeout: float | None = None) -> Any:
        """Next frame (pika.frame.Method / Header / Body / Heartbeat)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            if len(self.buf) >= 7:
                (size,) = struct.unpack_from(">I", self.buf, 3)
                if len(self.buf) >= 8 + size:
                    consumed, f = pframe.decode_frame(self.buf)
                    assert consumed == 8 + size, (consumed, size)
                    self.buf = self.buf[consumed:]
                    return f
            self._fill(deadline)

    def read_method(self, timeout: float | None = None, skip_heartbeats: bool = True) -> Any:
        """Next method frame (skipping heartbeats); returns the pika.frame.Method."""
        while True:
            f = self.read_frame(timeout)
            if skip_heartbeats and isinstance(f, pframe.Heartbeat):
                continue
            return f

    def expect_method(self, cls: type, channel: int | None = None,
                      timeout: float | None = None) -> Any:
        f = self.read_method(timeout)
        assert isinstance(f, pframe.Method), f"expected {cls.__name__}, got {f!r}"
        assert isinstance(f.method, cls), f"expected {cls.__name__}, got {f.method!r}"
        if channel is not None:
            assert f.channel_number == channel
        return f.method

    def expect_connection_close(self, timeout: float | None = None,
                                reply_close_ok: bool = True, wait_eof: bool = True,
                                eof_timeout: float | None = None) -> Close:
        """Wait for connection.close, answer close-ok, and return it.

        Only heartbeats may precede the close (anything else fails the test).  After close-ok
        the server must close the socket; that is checked too unless wait_eof=False.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if isinstance(f, pframe.Heartbeat):
                continue
            assert isinstance(f, pframe.Method) and isinstance(f.method, spec.Connection.Close), (
                f"expected connection.close, got {f!r}")
            m = f.method
            assert f.channel_number == 0
            close = Close(m.reply_code, m.reply_text, m.class_id, m.method_id)
            print(f"server connection.close: {close}")
            if reply_close_ok:
                with contextlib.suppress(OSError):
                    self.send_method(0, spec.Connection.CloseOk())
                if wait_eof:
                    self.expect_eof(eof_timeout)
            return close

    def expect_silent_close(self, timeout: float) -> tuple[bytes, float]:
        """The server closes the socket without sending anything; returns (bytes, seconds)."""
        t0 = time.monotonic()
        data = self.recv_all_until_eof(timeout)
        return data, time.monotonic() - t0

    def expect_channel_close(self, channel: int, timeout: float | None = None,
                             reply_close_ok: bool = True) -> Close:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if isinstance(f, pframe.Method) and isinstance(f.method, spec.Connection.Close):
                raise AssertionError(f"expected channel.close, got connection.close {f.method!r}")
            if (isinstance(f, pframe.Method) and f.channel_number == channel
                    and isinstance(f.method, spec.Channel.Close)):
                m = f.method
                if reply_close_ok:
                    self.send_method(channel, spec.Channel.CloseOk())
                close = Close(m.reply_code, m.reply_text, m.class_id, m.method_id)
                print(f"server channel.close: {close}")
                return close

    def expect_eof(self, timeout: float | None = None) -> bytes:
        """The server closes the socket within `timeout`; returns any trailing bytes."""
        return self.recv_all_until_eof(timeout)

    # -- handshake -----------------------------------------------------------------------
    def handshake(self, *, mechanism: str = "PLAIN", frame_max: int | None = None,
                  channel_max: int | None = None, heartbeat: int | None = None,
                  vhost: str | None = None, client_properties: dict[str, Any] | None = None,
                  open_vhost: bool = True) -> Handshake:
        """Protocol header, start/start-ok, tune/tune-ok and (unless open_vhost=False) open.

        frame_max/channel_max/heartbeat default to the server's proposal."""
        self.send(PROTOCOL_HEADER)
        start = self.expect_method(spec.Connection.Start, 0)
        if mechanism == "PLAIN":
            response = b"\x00" + self.username.encode() + b"\x00" + self.password.encode()
        elif mechanism == "AMQPLAIN":
            response = amqplain_response(self.username, self.password)
        else:
            response = b""
        props = client_properties if client_properties is not None else {
            "product": "amqpd-interop-raw",
            "capabilities": {"authentication_failure_close": True,
                             "consumer_cancel_notify": True,
                             "basic.nack": True, "publisher_confirms": True},
        }
        self.send_method(0, spec.Connection.StartOk(
            client_properties=props, mechanism=mechanism, response=response, locale="en_US"))
        tune = self.expect_method(spec.Connection.Tune, 0)
        fm = tune.frame_max if frame_max is None else frame_max
        cm = tune.channel_max if channel_max is None else channel_max
        hb = tune.heartbeat if heartbeat is None else heartbeat
        self.send_method(0, spec.Connection.TuneOk(channel_max=cm, frame_max=fm, heartbeat=hb))
        self.hs = Handshake(start=start, tune=tune, frame_max=fm, channel_max=cm, heartbeat=hb)
        if open_vhost:
            self.send_method(0, spec.Connection.Open(
                virtual_host=self.vhost if vhost is None else vhost))
            self.expect_method(spec.Connection.OpenOk, 0)
        return self.hs

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, spec.Channel.Open())
        self.expect_method(spec.Channel.OpenOk, channel)

    def call(self, channel: int, method: Any, reply: type) -> Any:
        self.send_method(channel, method)
        return self.expect_method(reply, channel)

    def close(self) -> None:
        """Clean connection.close handshake (best effort), then close the socket."""
        try:
            self.send_method(0, spec.Connection.Close(reply_code=200, reply_text="bye",
                                                      class_id=0, method_id=0))
            while True:
                f = self.read_method(2.0)
                if isinstance(f, pframe.Method) and isinstance(f.method, spec.Connection.CloseOk):
                    break
        except (OSError, TimeoutError, ConnectionClosedByPeer):
            pass
        finally:
            self.close_socket()


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


@functools.lru_cache(maxsize=8)
def server_properties(url: str) -> dict[str, Any]:
    """server_properties of the broker at url (full handshake, then a clean close)."""
    c = RawConnection.from_url(url)
    try:
        hs = c.handshake()
    finally:
        c.close()
    return dict(hs.start.server_properties)


def server_product(url: str) -> str:
    """server_properties['product'] ("RabbitMQ", "amqpd", ...)."""
    return _s(server_properties(url).get("product", ""))


def server_version(url: str) -> tuple[int, ...]:
    parts = []
    for p in _s(server_properties(url).get("version", "0")).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def is_rabbitmq(url: str) -> bool:
    return server_product(url) == "RabbitMQ"


def run_concurrently(fns: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Run zero-arg callables in threads (for checks that each wait on a server timer).

    Returns {name: result}; re-raises the first exception."""
    results: dict[str, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(fns))) as ex:
        futs = {name: ex.submit(fn) for name, fn in fns.items()}
        for name, fut in futs.items():
            results[name] = fut.result(timeout=timeout)
    return results
