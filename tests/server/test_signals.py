"""run_broker's signal handling, in-process: SIGTERM/SIGINT shut down; a second one forces.

The signals are sent to this very process, only while run_broker's receiver is open (it is
open before ``started``), so they never reach pytest's own handlers.
"""

from __future__ import annotations

import os
import signal

import pytest
import trio

from amqpd.server import ListenAddress, run_broker


async def _connect(server) -> trio.SocketStream:
    host, port = server.addresses[0].rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _read_until(stream: trio.abc.Stream, expected: bytes) -> bytes:
    got = b""
    while expected not in got:
        chunk = await stream.receive_some()
        assert chunk, f"EOF before {expected!r}"
        got += chunk
    return got


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_means_graceful_shutdown(fake_connections, signum):
    factory, _ = fake_connections
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: run_broker(
                    None,
                    [ListenAddress("127.0.0.1", 0)],
                    connection_factory=factory,
                    task_status=task_status,
                )
            )
            client = await _connect(server)
            await client.send_all(b"echo up\n")
            await _read_until(client, b"up\n")
            os.kill(os.getpid(), signum)
            await _read_until(client, b"close 320\n")
            await client.send_all(b"close-ok\n")
            assert await client.receive_some() == b""
        # run_broker returned on its own: the nursery had nothing left to wait for.


async def test_second_signal_stops_at_once(fake_connections):
    factory, conns = fake_connections
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: run_broker(
                    None,
                    [ListenAddress("127.0.0.1", 0)],
                    connection_factory=factory,
                    task_status=task_status,
                )
            )
            client = await _connect(server)
            await client.send_all(b"echo up\n")
            await _read_until(client, b"up\n")
            start = trio.current_time()
            os.kill(os.getpid(), signal.SIGTERM)
            await _read_until(client, b"close 320\n")
            # This client never answers; without a second signal we would wait out the grace.
            os.kill(os.getpid(), signal.SIGTERM)
            assert await client.receive_some() == b""
    assert trio.current_time() - start < 2
    assert conns[1].lost == 1
