"""The server's I/O behaviour against a fake Connection over memory streams (see conftest)."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from amqpd.server.faults import internal_error_frame


async def test_echo_then_eof_closes_and_reports_lost(harness, autojump_clock):
    client, conn = await harness.connect()
    await client.send_all(b"echo hello\n")
    assert await harness.read_until(client, b"hello\n") == b"hello\n"
    await client.send_eof()
    assert await harness.read_to_eof(client) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert conn.eof
    assert conn.received[-1] == b""
    assert conn.lost == 1
    assert harness.server.connection_count == 0


async def test_closed_connection_is_flushed_then_hung_up(harness, autojump_clock):
    client, conn = await harness.connect()
    await client.send_all(b"echo a\nclose\n")
    assert await harness.read_to_eof(client) == b"a\nbye\n"
    assert harness.listener.server_streams[0].closed
    await trio.testing.wait_all_tasks_blocked()
    assert conn.lost == 1  # once, even after a clean close


async def test_output_queued_during_the_last_send_is_flushed_before_hanging_up(
    harness, autojump_clock
):
    client, conn = await harness.connect()
    publisher, _ = await harness.connect()
    stream = harness.listener.server_streams[0]
    stream.gate = trio.Event()
    await publisher.send_all(f"pub {conn.id} first\n".encode())
    await trio.testing.wait_all_tasks_blocked()  # the writer is stuck sending "first"
    await client.send_all(b"close\n")  # the connection closes with "bye" still queued
    await trio.testing.wait_all_tasks_blocked()
    stream.gate.set()
    assert await harness.read_to_eof(client) == b"first\nbye\n"


async def test_output_from_another_connection_wakes_the_writer(harness, autojump_clock):
    consumer, consumer_conn = await harness.connect()
    publisher, _ = await harness.connect()
    await publisher.send_all(f"pub {consumer_conn.id} delivery\n".encode())
    assert await harness.read_until(consumer, b"delivery\n") == b"delivery\n"


async def test_one_send_all_per_wake_up(harness, autojump_clock):
    consumer, consumer_conn = await harness.connect()
    publisher, _ = await harness.connect()
    stream = harness.listener.server_streams[0]
    # Three deliveries queued by one publisher receive_data: one wake-up, one send_all.
    await publisher.send_all(b"".join(f"pub {consumer_conn.id} m{i}\n".encode() for i in range(3)))
    await harness.read_until(consumer, b"m2\n")
    assert stream.sends == [b"m0\nm1\nm2\n"]


async def test_output_queued_during_a_send_goes_out_as_one_batch(harness, autojump_clock):
    consumer, consumer_conn = await harness.connect()
    publisher, _ = await harness.connect()
    stream = harness.listener.server_streams[0]
    stream.gate = trio.Event()  # the peer is slow: the first send_all blocks
    await publisher.send_all(f"pub {consumer_conn.id} first\n".encode())
    await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        await publisher.send_all(f"pub {consumer_conn.id} m{i}\n".encode())
        await trio.testing.wait_all_tasks_blocked()
    stream.gate.set()
    await harness.read_until(consumer, b"m2\n")
    assert stream.sends == [b"first\n", b"m0\nm1\nm2\n"]


async def test_timer_drives_tick(harness, autojump_clock):
    client, conn = await harness.connect()
    start = trio.current_time()
    await client.send_all(b"hb 10\n")
    await harness.read_until(client, b"tick\ntick\n")
    assert conn.ticks == pytest.approx([start + 10, start + 20])


async def test_an_earlier_deadline_wakes_the_timer(harness, autojump_clock):
    client, conn = await harness.connect()
    start = trio.current_time()
    await client.send_all(b"hb 100\n")
    await trio.testing.wait_all_tasks_blocked()
    await client.send_all(b"hb 5\n")
    await harness.read_until(client, b"tick\n")
    assert conn.ticks == pytest.approx([start + 5])


async def test_a_crash_drops_only_that_connection(harness, autojump_clock):
    bad, bad_conn = await harness.connect()
    good, _ = await harness.connect()
    await bad.send_all(b"boom\n")
    # The crashed connection gets connection.close 541 INTERNAL_ERROR, then EOF.
    assert await harness.read_to_eof(bad) == internal_error_frame()
    await trio.testing.wait_all_tasks_blocked()
    assert bad_conn.lost == 1
    await good.send_all(b"echo still here\n")
    await harness.read_until(good, b"still here\n")
    late, _ = await harness.connect()  # and the server still accepts
    await late.send_all(b"echo late\n")
    await harness.read_until(late, b"late\n")


async def test_a_crash_in_tick_drops_the_connection(harness, autojump_clock):
    client, conn = await harness.connect()
    await client.send_all(b"tickboom\nhb 1\n")
    assert await harness.read_to_eof(client) == internal_error_frame()
    await trio.testing.wait_all_tasks_blocked()
    assert conn.lost == 1


async def test_a_deadline_that_never_advances_is_a_crash_not_a_spin(harness, autojump_clock):
    client, conn = await harness.connect()
    await client.send_all(b"stuck\n")
    # The writer was cut off mid-send (its "tick" batch), so no 541 may follow: just EOF.
    await harness.read_to_eof(client)
    await trio.testing.wait_all_tasks_blocked()
    assert conn.lost == 1


async def test_a_failing_connection_factory_closes_the_socket(harness, autojump_clock):
    harness.factory_box["fail"] = True
    client = await harness.listener.connect()
    assert await harness.read_to_eof(client) == b""
    harness.factory_box["fail"] = False
    ok, _ = await harness.connect()
    await ok.send_all(b"echo ok\n")
    await harness.read_until(ok, b"ok\n")


async def test_peer_reset_reports_lost(harness, autojump_clock):
    client, conn = await harness.connect()
    await client.aclose()  # our sends now hit a closed peer: BrokenResourceError
    await trio.testing.wait_all_tasks_blocked()
    assert conn.lost == 1
    assert harness.server.connection_count == 0


async def test_shutdown_closes_every_connection(harness, autojump_clock):
    polite, polite_conn = await harness.connect()
    silent, silent_conn = await harness.connect()
    start = trio.current_time()
    harness.server.shutdown()
    await harness.read_until(polite, b"close 320\n")
    await polite.send_all(b"close-ok\n")
    assert await harness.read_to_eof(polite) == b""
    # The silent client never answers: it is hung up on when the grace period ends.
    assert await harness.read_until(silent, b"close 320\n") == b"close 320\n"
    assert await harness.read_to_eof(silent) == b""
    assert trio.current_time() - start == pytest.approx(2.0)
    await trio.testing.wait_all_tasks_blocked()
    assert (polite_conn.lost, silent_conn.lost) == (1, 1)
    assert harness.server.connection_count == 0
    with pytest.raises(trio.ClosedResourceError):
        await harness.listener.accept()  # no longer accepting


async def test_shutdown_returns_early_when_everyone_answers(harness_factory, autojump_clock):
    h = harness_factory(shutdown_grace=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(h.server.run)
        client, _ = await h.connect()
        start = trio.current_time()
        h.server.shutdown()
        await h.read_until(client, b"close 320\n")
        await client.send_all(b"close-ok\n")
    # run() returned (the nursery exited) without waiting out the 30 s grace period.
    assert trio.current_time() - start < 1


async def test_no_connections_accepted_once_shutting_down(harness, autojump_clock):
    client, _ = await harness.connect()
    harness.server.shutdown()
    await harness.read_until(client, b"close 320\n")
    with pytest.raises(trio.BrokenResourceError):
        await harness.listener.connect()  # the listener is closed: "connection refused"


def test_internal_error_frame_layout():
    frame = internal_error_frame()
    kind, channel, size = struct.unpack(">BHI", frame[:7])
    assert (kind, channel, size + 8) == (1, 0, len(frame))
    assert frame[-1:] == b"\xce"
    class_id, method_id, code, text_len = struct.unpack(">HHHB", frame[7:14])
    assert (class_id, method_id, code) == (10, 50, 541)
    assert frame[14 : 14 + text_len].startswith(b"INTERNAL_ERROR - ")


async def test_a_peer_that_never_reads_the_final_output_is_hung_up_on(harness, autojump_clock):
    client, conn = await harness.connect()
    stream = harness.listener.server_streams[0]
    stream.gate = trio.Event()  # the peer stops reading: every send blocks
    start = trio.current_time()
    await client.send_all(b"close\n")  # "bye" is queued, the connection is closed
    await harness.read_to_eof(client)
    assert trio.current_time() - start == pytest.approx(10)
    await trio.testing.wait_all_tasks_blocked()
    assert conn.lost == 1
