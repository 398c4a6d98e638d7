"""Accept connections and run one ``ConnectionTask`` per client, all in one nursery.

Rules of this module:
- One nursery holds the accept loops and every connection task; nothing a connection does
  can raise into it (see connection_task.py), so one bad client never stops the others.
- Graceful shutdown: stop accepting, ask every connection to close (320), wait at most
  ``shutdown_grace`` seconds for the close-oks, then hang up on whoever is left.
"""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs
import structlog
import trio

from amqpd.server.broker_timer import BrokerTimer
from amqpd.server.certificates import login_name
from amqpd.server.connection_task import READ_SIZE, ConnectionTask, ServedConnection
from amqpd.server.listeners import bound_address, format_hostport
from amqpd.session.config import ConnectionConfig
from amqpd.session.connection import Connection

if TYPE_CHECKING:
    from amqpd.broker.alarms import Alarms
    from amqpd.broker.broker import Broker

log = structlog.get_logger("amqpd.server")

# (now, peer_host) -> a fresh session connection for a newly accepted socket. peer_host is the
# bare IP address (no port: the session parses it to decide whether the peer is loopback),
# None for a stream that is not a socket (in-process tests).
#: ``factory(now, peer_host)``, or ``factory(now, peer_host, peer_certificate_name)`` for a
#: TLS client with a verified certificate (the EXTERNAL mechanism's user, as
#: ``ssl_cert_login_from`` forms it: server/certificates.py).
ConnectionFactory = Callable[..., ServedConnection]

#: How long a TLS client has for its handshake before the AMQP one starts (RabbitMQ's
#: ssl_handshake_timeout, 5 s).
TLS_HANDSHAKE_TIMEOUT = 5.0

# accept() failures that mean "out of resources for now", not "this listener is broken";
# trio.serve_listeners treats the same set this way.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_DELAY = 0.1


@attrs.frozen
class ServerConfig:
    """Server knobs. ``connection`` is the session's ``ConnectionConfig`` (None: its defaults)."""

    connection: ConnectionConfig | None = None
    shutdown_grace: float = 2.5
    read_size: int = READ_SIZE


class Server:
    """Run with ``await nursery.start(server.run)``; ``started`` hands back the server."""

    def __init__(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        connection_factory: ConnectionFactory,
        *,
        config: ServerConfig = ServerConfig(),
    ) -> None:
        self.listeners = list(listeners)
        self.config = config
        self._factory = connection_factory
        self._ids = itertools.count(1)
        self._tasks: set[ConnectionTask] = set()
        self._accept_scope = trio.CancelScope()
        self._shutdown_requested = trio.Event()
        self._all_closed: trio.Event | None = None
        self.shutting_down = False
        # Resource alarms (resources.py sets it): their state goes to every new connection.
        self.alarms: Alarms | None = None

    @property
    def addresses(self) -> list[str]:
        """The bound ``host:port`` of every socket listener (port 0 resolved)."""
        found = []
        for x in self.listeners:
            if isinstance(x, trio.SSLListener):
                x = x.transport_listener  # amqps: name the socket under the TLS layer
            if isinstance(x, trio.SocketListener):
                found.append(bound_address(x))
        return found

    @property
    def connection_count(self) -> int:
        return len(self._tasks)

    def apply_alarm(self, reason: str | None) -> None:
        """A resource alarm went on (``reason``: connection.blocked's text) or off (None)."""
        for task in list(self._tasks):
            task.set_blocked(reason)

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``run`` returns once it is done."""
        self._shutdown_requested.set()

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._accept_all, nursery)
            task_status.started(self)
            await self._shutdown_requested.wait()
            await self._drain()

    async def _accept_all(self, connections: trio.Nursery) -> None:
        try:
            with self._accept_scope:
                async with trio.open_nursery() as nursery:
                    for listener in self.listeners:
                        nursery.start_soon(self._accept_loop, listener, connections)
        finally:
            # Shielded so that every listener is closed even when the server is cancelled.
            with trio.CancelScope(shield=True):
                for listener in self.listeners:
                    await trio.aclose_forcefully(listener)

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], connections: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("accept failed; retrying", error=str(exc))
                await trio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            connections.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        conn_id = next(self._ids)
        if self.shutting_down:
            await trio.aclose_forcefully(stream)
            return
        try:
            peer_host, peer = _peer_of(stream)
            _set_nodelay(stream)
        except OSError:
            await trio.aclose_forcefully(stream)  # reset between accept() and here
            return
        peer_cn = None
        if isinstance(stream, trio.SSLStream):
            try:
                with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                log.info("TLS handshake failed", conn=conn_id, peer=peer, error=repr(exc))
                await trio.aclose_forcefully(stream)
                return
            connection = self.config.connection or ConnectionConfig()
            peer_cn = _certificate_login(stream, connection.ssl_cert_login_from)
        try:
            now = trio.current_time()
            conn = (
                self._factory(now, peer_host)
                if peer_cn is None
                else (self._factory(now, peer_host, peer_cn))
            )
        except Exception as exc:
            log.error("could not set up connection", conn=conn_id, peer=peer, exc_info=exc)
            await trio.aclose_forcefully(stream)
            return
        task = ConnectionTask(
            stream, conn, conn_id=conn_id, peer=peer, read_size=self.config.read_size
        )
        self._tasks.add(task)
        if self.alarms is not None and self.alarms.reason is not None:
            task.set_blocked(self.alarms.reason)
        log.info("accepted connection", conn=conn_id, peer=peer)
        try:
            await task.run()
        except Exception as exc:
            # ConnectionTask contains its own failures; this is the last line of defence that
            # keeps one connection's surprise out of the server's nursery.
            log.error("connection task failed", conn=conn_id, peer=peer, exc_info=exc)
        finally:
            self._tasks.discard(task)
            log.info("connection closed", conn=conn_id, peer=peer)
            if not self._tasks and self._all_closed is not None:
                self._all_closed.set()

    async def _drain(self) -> None:
        self.shutting_down = True
        self._accept_scope.cancel()
        now = trio.current_time()
        tasks = list(self._tasks)
        log.info("shutting down", connections=len(tasks))
        for task in tasks:
            task.shutdown(now)
        if self._tasks:
            self._all_closed = trio.Event()
            with trio.move_on_after(self.config.shutdown_grace):
                await self._all_closed.wait()
        for task in list(self._tasks):
            task.force_close()


async def serve(
    broker: Broker,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    config: ServerConfig = ServerConfig(),
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve AMQP on ``listeners`` with real session connections on ``broker``.

    Also runs the broker's timer (queue TTL and x-expires) for as long as the server runs.
    """
    server = Server(listeners, session_connection_factory(broker, config.connection), config=config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(BrokerTimer(broker).run)
        await server.run(task_status=task_status)
        nursery.cancel_scope.cancel()


def session_connection_factory(
    broker: Broker, config: ConnectionConfig | None = None
) -> ConnectionFactory:
    connection_config = config if config is not None else ConnectionConfig()

    def make(now: float, peer: str | None, peer_certificate: str | None = None) -> ServedConnection:
        return Connection(
            broker, now=now, peer=peer, config=connection_config, peer_certificate=peer_certificate
        )

    return make


def _peer_of(stream: trio.abc.Stream) -> tuple[str | None, str | None]:
    """``(host, "host:port")`` of the peer, for the session and for our logs.

    ``(None, None)`` for streams that are not sockets (in-process tests); raises ``OSError``
    for a socket already reset, which must not reach the session as "no peer" (= local).
    """
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        host, port = stream.socket.getpeername()[:2]
        return str(host), format_hostport(str(host), int(port))
    return None, None


def _certificate_login(stream: trio.SSLStream[trio.abc.Stream], login_from: str) -> str | None:
    """The EXTERNAL user name of the verified client certificate ("" if it names nobody),
    None without one.

    ``getpeercert()`` is {} unless the handshake received and verified a certificate; the
    DER form is read for the name because the dict form loses RabbitMQ's attribute names.
    """
    if not stream.getpeercert():
        return None
    der = stream.getpeercert(binary_form=True)
    if not der:
        return None
    # "": a certificate that names nobody; EXTERNAL is still offered, and then refused.
    return login_name(der, login_from) or ""


def _set_nodelay(stream: trio.abc.Stream) -> None:
    # trio already enables TCP_NODELAY on SocketStreams; say so explicitly because AMQP's
    # small synchronous replies (declare-ok, consume-ok) would otherwise wait on Nagle.
    if isinstance(stream, trio.SocketStream):
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
