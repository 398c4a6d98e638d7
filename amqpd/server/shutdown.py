"""Run the broker as a process: bind, say "ready", serve until SIGINT/SIGTERM, shut down.

Rules of this module:
- The signal receiver is open before the listeners bind, so a signal sent the moment the
  ready line appears is a graceful shutdown, never a KeyboardInterrupt traceback.
- First signal: graceful shutdown (close 320 to every client, bounded wait). Second signal:
  stop at once.
- SIGHUP (when a ``reload`` callable is given): reload the configuration live; ignored
  once a shutdown has begun.
- With a durable log, its persister runs beside the server from before the listeners open
  until every connection is gone; then the log is closed (last batch committed, marked as
  a clean stop), whatever way the serving ended. A storage failure stops the broker.
"""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
import trio

from amqpd.server.broker_timer import BrokerTimer
from amqpd.server.listeners import ListenAddress, open_listeners
from amqpd.server.persister import run_persister
from amqpd.server.resources import Measure, run_resource_monitor
from amqpd.server.server import (
    ConnectionFactory,
    Server,
    ServerConfig,
    session_connection_factory,
)
from amqpd.storage.durable import run_callbacks

if TYPE_CHECKING:
    from amqpd.broker.alarms import Alarms
    from amqpd.broker.broker import Broker
    from amqpd.storage.disklog import DiskDurableLog

log = structlog.get_logger("amqpd.server")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RELOAD_SIGNAL = signal.SIGHUP
#: ``amqpd export-definitions --pid-file``: write the live definitions (the edge's Exporter).
EXPORT_SIGNAL = signal.SIGUSR1

#: ``reload(now)`` re-reads the configuration and returns the connections to close, with
#: the connection.close text for each (the edge owns the config file; we own time and
#: sockets: ``now`` is when re-applied policies take effect on the queues).
Reload = Callable[[float], Sequence[tuple[Any, str]]]


def ready_message(addresses: Sequence[str]) -> str:
    """The one line tools wait for; ``listening on HOST:PORT`` is the parsable part."""
    return "amqpd ready, listening on " + " ".join(addresses)


async def run_broker(
    broker: Broker | None,
    addresses: Sequence[ListenAddress],
    *,
    config: ServerConfig | None = None,
    connection_factory: ConnectionFactory | None = None,
    reload: Reload | None = None,
    export: Callable[[], object] | None = None,
    tls_addresses: Sequence[ListenAddress] = (),
    ssl_context: ssl.SSLContext | None = None,
    durable_log: DiskDurableLog | None = None,
    alarms: Alarms | None = None,
    measure: Measure | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a shutdown signal; returns after a graceful shutdown. Bind errors raise.

    ``connection_factory`` replaces the session's ``Connection`` (tests); otherwise
    ``broker`` must be given. ``task_status.started`` gets the server once it is ready.
    ``durable_log`` (already recovered into ``broker``) gets its persister; it is closed
    when serving ends. ``alarms`` with ``measure`` runs the resource monitor
    (resources.py): connections that publish are blocked while an alarm is on.
    """
    config = config if config is not None else ServerConfig()
    if connection_factory is None:
        if broker is None:
            raise TypeError("run_broker needs a broker or a connection_factory")
        connection_factory = session_connection_factory(broker, config.connection)
    wanted = (
        *SHUTDOWN_SIGNALS,
        *((RELOAD_SIGNAL,) if reload is not None else ()),
        *((EXPORT_SIGNAL,) if export is not None else ()),
    )
    with trio.open_signal_receiver(*wanted) as signals:
        try:
            listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(
                await open_listeners(list(addresses))
            )
            if tls_addresses:
                if ssl_context is None:
                    raise TypeError("amqps listeners need an ssl_context")
                # amqps (RabbitMQ listeners.ssl): TLS from the first byte, then plain AMQP.
                for plain in await open_listeners(list(tls_addresses)):
                    listeners.append(trio.SSLListener(plain, ssl_context, https_compatible=False))
            server = Server(listeners, connection_factory, config=config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _watch_signals, signals, server, nursery.cancel_scope, reload, export
                )
                if broker is not None:
                    # The queue timers (TTL, x-expires, delayed messages); cancelled with
                    # the signal watcher.
                    nursery.start_soon(BrokerTimer(broker).run)
                if durable_log is not None:
                    await nursery.start(run_persister, durable_log)
                if alarms is not None and measure is not None:
                    nursery.start_soon(run_resource_monitor, alarms, server, measure)
                async with trio.open_nursery() as serving:
                    await serving.start(server.run)
                    bound = server.addresses
                    log.info(ready_message(bound), listeners=bound, ready=True)
                    task_status.started(server)
                # server.run returned: the graceful shutdown is complete; stop watching
                # signals, the timers and the persister (the log is closed below).
                nursery.cancel_scope.cancel()
        finally:
            if durable_log is not None and not durable_log.log.broken:
                # Every connection is gone: nothing is in doubt any more, a clean stop.
                run_callbacks(durable_log.close(clean=True))
                log.info("data directory closed")
            if broker is not None and broker.paging is not None:
                broker.paging.close()  # the delta files: nothing in them outlives us
            if broker is not None and broker.delay_buckets is not None:
                broker.delay_buckets.close()  # rebuilt from the log at the next start
        log.info("stopped")


async def _watch_signals(
    signals: AsyncIterator[int],
    server: Server,
    scope: trio.CancelScope,
    reload: Reload | None = None,
    export: Callable[[], object] | None = None,
) -> None:
    count = 0
    async for signum in signals:
        if signum == RELOAD_SIGNAL:
            if reload is not None and count == 0:
                _reload(reload)
            continue
        if signum == EXPORT_SIGNAL:
            if export is not None:
                try:
                    log.info("definitions export requested", exported=export())
                except Exception as exc:  # a failed export must not take the broker down
                    log.error("definitions export failed", exc_info=exc)
            continue
        count += 1
        if count == 1:
            log.info("shutdown requested", signal=signal.Signals(signum).name)
            server.shutdown()
        else:
            log.warning("second signal; stopping now", signal=signal.Signals(signum).name)
            scope.cancel()
            return


def _reload(reload: Reload) -> None:
    """SIGHUP: apply the re-read configuration, then close the connections it names."""
    log.info("reload requested", signal="SIGHUP")
    now = trio.current_time()
    try:
        to_close = reload(now)
    except Exception as exc:  # a bug in reloading must not take the broker down
        log.error("reload failed", exc_info=exc)
        return
    for conn, reason in to_close:
        try:
            conn.close_forced(reason, now)
        except Exception as exc:
            log.error("closing a connection after reload failed", exc_info=exc)
