"""Run the broker as a process: bind, say "ready", serve until SIGINT/SIGTERM, shut down.

Rules of this module:
- The signal receiver is open before the listeners bind, so a signal sent the moment the
  ready line appears is a graceful shutdown, never a KeyboardInterrupt traceback.
- First signal: graceful shutdown (close 320 to every client, bounded wait). Second signal:
  stop at once.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import structlog
import trio

from amqpd.server.broker_timer import BrokerTimer
from amqpd.server.listeners import ListenAddress, open_listeners
from amqpd.server.server import (
    ConnectionFactory,
    Server,
    ServerConfig,
    session_connection_factory,
)

if TYPE_CHECKING:
    from amqpd.broker.broker import Broker

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
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a shutdown signal; returns after a graceful shutdown. Bind errors raise.

    ``connection_factory`` replaces the session's ``Connection`` (tests); otherwise
    ``broker`` must be given. ``task_status.started`` gets the server once it is ready.
    """
    config = config if config is not None else ServerConfig()
    if connection_factory is None:
        if broker is None:
            raise TypeError("run_broker needs a broker or a connection_factory")
        connection_factory = session_connection_factory(broker, config.connection)
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        listeners = await open_listeners(list(addresses))
        server = Server(listeners, connection_factory, config=config)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
            if broker is not None:
                # The queue timers (TTL, x-expires); cancelled with the signal watcher.
                nursery.start_soon(BrokerTimer(broker).run)
            async with trio.open_nursery() as serving:
                await serving.start(server.run)
                bound = server.addresses
                log.info(ready_message(bound), listeners=bound, ready=True)
                task_status.started(server)
            # server.run returned: the graceful shutdown is complete; stop watching signals.
            nursery.cancel_scope.cancel()
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
