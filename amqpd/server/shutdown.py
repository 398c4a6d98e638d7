"""Run the broker as a process: bind, say "ready", serve until SIGINT/SIGTERM, shut down.

Rules of this module:
- The signal receiver is open before the listeners bind, so a signal sent the moment the
  ready line appears is a graceful shutdown, never a KeyboardInterrupt traceback.
- First signal: graceful shutdown (close 320 to every client, bounded wait). Second signal:
  stop at once.
- With a durable log, its persister runs beside the server from before the listeners open
  until every connection is gone; then the log is closed (last batch committed, marked as
  a clean stop), whatever way the serving ended. A storage failure stops the broker.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import structlog
import trio

from amqpd.server.listeners import ListenAddress, open_listeners
from amqpd.server.persister import run_persister
from amqpd.server.server import (
    ConnectionFactory,
    Server,
    ServerConfig,
    session_connection_factory,
)
from amqpd.storage.durable import run_callbacks

if TYPE_CHECKING:
    from amqpd.broker.broker import Broker
    from amqpd.storage.disklog import DiskDurableLog

log = structlog.get_logger("amqpd.server")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ready_message(addresses: Sequence[str]) -> str:
    """The one line tools wait for; ``listening on HOST:PORT`` is the parsable part."""
    return "amqpd ready, listening on " + " ".join(addresses)


async def run_broker(
    broker: Broker | None,
    addresses: Sequence[ListenAddress],
    *,
    config: ServerConfig | None = None,
    connection_factory: ConnectionFactory | None = None,
    durable_log: DiskDurableLog | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a shutdown signal; returns after a graceful shutdown. Bind errors raise.

    ``connection_factory`` replaces the session's ``Connection`` (tests); otherwise
    ``broker`` must be given. ``task_status.started`` gets the server once it is ready.
    ``durable_log`` (already recovered into ``broker``) gets its persister; it is closed
    when serving ends.
    """
    config = config if config is not None else ServerConfig()
    if connection_factory is None:
        if broker is None:
            raise TypeError("run_broker needs a broker or a connection_factory")
        connection_factory = session_connection_factory(broker, config.connection)
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        try:
            listeners = await open_listeners(list(addresses))
            server = Server(listeners, connection_factory, config=config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
                if durable_log is not None:
                    await nursery.start(run_persister, durable_log)
                async with trio.open_nursery() as serving:
                    await serving.start(server.run)
                    bound = server.addresses
                    log.info(ready_message(bound), listeners=bound, ready=True)
                    task_status.started(server)
                # server.run returned: the graceful shutdown is complete; stop watching
                # signals and stop the persister (the log is closed below).
                nursery.cancel_scope.cancel()
        finally:
            if durable_log is not None and not durable_log.log.broken:
                # Every connection is gone: nothing is in doubt any more, a clean stop.
                run_callbacks(durable_log.close(clean=True))
                log.info("data directory closed")
        log.info("stopped")


async def _watch_signals(
    signals: AsyncIterator[int], server: Server, scope: trio.CancelScope
) -> None:
    count = 0
    async for signum in signals:
        count += 1
        if count == 1:
            log.info("shutdown requested", signal=signal.Signals(signum).name)
            server.shutdown()
        else:
            log.warning("second signal; stopping now", signal=signal.Signals(signum).name)
            scope.cancel()
            return
