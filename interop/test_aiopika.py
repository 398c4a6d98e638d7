"""aio-pika / aiormq interop: robust connections, confirms, iterators, qos, RPC and Master
patterns, header types, big bodies, channel errors and transactions.

pytest runs in trio mode here, so every test is a plain function that drives its own asyncio
loop through ``run()`` (with an overall bound).  Names are unique per test (``names`` fixture
from conftest.py, which also deletes them afterwards).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import pytest
from aio_pika.patterns import RPC, Master
from rawamqp import is_rabbitmq

WAIT = 5.0  # bound for events that must happen


def run(factory: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(main())


async def depth(ch: Any, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) from a real passive queue.declare (robust channels would
    answer a passive declare of a known queue from their cache)."""
    ok = await (await ch.get_underlay_channel()).queue_declare(queue, passive=True)
    return ok.message_count, ok.consumer_count


def test_aiopika_robust_publish_confirm_and_iterator_consume(amqp_url: str, names: Any) -> None:
    qname, xname = names.queue(), names.exchange()

    async def main() -> None:
        conn = await aio_pika.connect_robust(amqp_url)
        async with conn:
            ch = await conn.channel()  # publisher confirms on by default
            x = await ch.declare_exchange(xname, aio_pika.ExchangeType.DIRECT, durable=False,
                                          auto_delete=False)
            q = await ch.declare_queue(qname, durable=False)
            await q.bind(x, routing_key="rk")
            for i in range(5):
                confirm = await x.publish(
                    aio_pika.Message(body=f"m{i}".encode(), message_id=str(i),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="rk")
                assert isinstance(confirm, aiormq.spec.Basic.Ack)
            assert await depth(ch, qname) == (5, 0)

            got = []
            async with q.iterator() as it:
                async for msg in it:
                    assert msg.exchange == xname and msg.routing_key == "rk"
                    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                    assert msg.redelivered is False
                    got.append(msg.body)
                    await msg.ack()
                    if len(got) == 5:
                        break
            assert got == [f"m{i}".encode() for i in range(5)]
            assert await depth(ch, qname) == (0, 0)

    run(main)


def test_aiopika_prefetch_limits_unacked(amqp_url: str, names: Any) -> None:
    qname = names.queue()

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=2)
            q = await ch.declare_queue(qname)
            for i in range(5):
                await ch.default_exchange.publish(aio_pika.Message(body=b"%d" % i), qname)
            delivered: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
            tag = await q.consume(delivered.put)
            first = [await asyncio.wait_for(delivered.get(), WAIT) for _ in range(2)]
            # With 2 unacked deliveries the broker holds the other 3 back (ready count).
            assert await depth(ch, qname) == (3, 1)
            assert delivered.empty()
            await first[0].ack()
            third = await asyncio.wait_for(delivered.get(), WAIT)
            assert third.body == b"2"
            for m in [first[1], third]:
                await m.ack()
            rest = [await asyncio.wait_for(delivered.get(), WAIT) for _ in range(2)]
            assert [m.body for m in rest] == [b"3", b"4"]
            for m in rest:
                await m.ack()
            await q.cancel(tag)

    run(main)


def test_aiopika_nack_requeue_and_reject(amqp_url: str, names: Any) -> None:
    qname = names.queue()

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(qname)
            await ch.default_exchange.publish(aio_pika.Message(body=b"a"), qname)
            m = await q.get(no_ack=False, timeout=WAIT)
            assert m.redelivered is False
            await m.nack(requeue=True)
            m2 = await q.get(no_ack=False, timeout=WAIT)
            assert m2.body == b"a" and m2.redelivered is True
            await m2.reject(requeue=False)
            assert await q.get(no_ack=False, fail=False) is None

    run(main)


def test_aiopika_rpc_pattern(amqp_url: str, names: Any) -> None:
    method = names.queue("rpc")

    async def main() -> None:
        async with await aio_pika.connect_robust(amqp_url) as conn:
            server_ch = await conn.channel()
            client_ch = await conn.channel()
            server = await RPC.create(server_ch)
            client = await RPC.create(client_ch)

            async def multiply(*, x: int, y: int) -> int:
                return x * y

            async def boom() -> None:
                raise ValueError("nope")

            await server.register(method, multiply, auto_delete=True)
            await server.register(method + ".boom", boom, auto_delete=True)
            names.add_queue(method + ".boom")
            assert await client.call(method, kwargs={"x": 6, "y": 7}) == 42
            results = await asyncio.gather(
                *(client.proxy.__getattr__(method)(x=i, y=2) for i in range(10)))
            assert results == [i * 2 for i in range(10)]
            with pytest.raises(ValueError, match="nope"):
                await client.call(method + ".boom")
            await client.close()
            await server.close()

    run(main)


def test_aiopika_master_worker_pattern(amqp_url: str, names: Any) -> None:
    qname = names.queue("tasks")

    async def main() -> None:
        async with await aio_pika.connect_robust(amqp_url) as conn:
            ch = await conn.channel()
            master = Master(ch)
            done: asyncio.Queue[int] = asyncio.Queue()

            async def worker(*, n: int) -> None:
                await done.put(n)

            w = await master.create_worker(qname, worker, auto_delete=True)
            for i in range(5):
                await master.proxy.__getattr__(qname)(n=i)
            got = sorted([await asyncio.wait_for(done.get(), WAIT) for _ in range(5)])
            assert got == list(range(5))
            await w.close()

    run(main)


def test_aiopika_header_types_roundtrip(amqp_url: str, names: Any) -> None:
    """Headers of many AMQP field types come back as they went (RabbitMQ passes the
    properties through untouched)."""
    qname = names.queue()
    ts = datetime.datetime(2024, 5, 17, 12, 30, 45, tzinfo=datetime.UTC)
    headers = {
        "str": "héllo",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "float": 1.5,
        "true": True,
        "false": False,
        "bytes": bytearray(b"\x00\x01\xff"),  # pamqp: field type x
        "short": 1000,  # pamqp picks the smallest int type: b, s, I, l
        "decimal": decimal.Decimal("3.14"),
        "none": None,
        "list": [1, "two", 3.0, True],
        "table": {"nested": {"deep": "yes"}, "n": 1},
        "ts": ts,
    }

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(qname)
            await ch.default_exchange.publish(
                aio_pika.Message(
                    body=b"h", headers=headers, content_type="application/octet-stream",
                    content_encoding="binary", priority=3, correlation_id="cid",
                    reply_to="rt", expiration=60, message_id="mid", timestamp=ts,
                    type="kind", user_id="guest", app_id="app"),
                qname)
            m = await q.get(timeout=WAIT)
            await m.ack()
            got = m.headers
            print(got)
            for key, want in headers.items():
                value = got[key]
                if isinstance(value, datetime.datetime) and value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.UTC)
                assert value == want, key
            assert m.content_type == "application/octet-stream"
            assert m.content_encoding == "binary"
            assert m.priority == 3 and m.correlation_id == "cid" and m.reply_to == "rt"
            assert m.message_id == "mid" and m.type == "kind" and m.user_id == "guest"
            assert m.app_id == "app"
            assert m.expiration == 60  # aio-pika parses the "60000" ms string back to seconds
            assert m.timestamp is not None
            assert m.timestamp.replace(tzinfo=datetime.UTC) == ts

    run(main)


def test_aiopika_large_message(amqp_url: str, names: Any) -> None:
    qname = names.queue()
    body = os.urandom(3 * 1024 * 1024 + 17)

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(qname)
            await ch.default_exchange.publish(aio_pika.Message(body=body), qname)
            m = await q.get(timeout=WAIT)
            await m.ack()
            assert len(m.body) == len(body) and m.body == body
            assert m.body_size == len(body)

    run(main)


def test_aiopika_channel_error_then_new_channel(amqp_url: str, names: Any) -> None:
    missing = names.queue("missing")

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as ei:
                await ch.declare_queue(missing, passive=True)
            print(ei.value.args)
            frame = ei.value.args[1] if len(ei.value.args) > 1 else None
            assert ei.value.args[0] == f"NOT_FOUND - no queue '{missing}' in vhost '/'"
            if frame is not None:
                assert frame.reply_code == 404
                assert (frame.class_id, frame.method_id) == (50, 10)
            assert ch.is_closed
            assert not conn.is_closed
            ch2 = await conn.channel()
            q = await ch2.declare_queue(exclusive=True)
            await ch2.default_exchange.publish(aio_pika.Message(body=b"ok"), q.name)
            m = await q.get(timeout=WAIT)
            assert m.body == b"ok"
            await m.ack()

    run(main)


def test_aiopika_channel_error_publish_to_missing_exchange(amqp_url: str, names: Any) -> None:
    """Publishing to a missing exchange: channel.close 404 arrives instead of the confirm."""
    missing = names.exchange("missing")

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            x = aio_pika.Exchange(ch, missing, aio_pika.ExchangeType.DIRECT)
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as ei:
                await x.publish(aio_pika.Message(body=b"x"), routing_key="k")
            assert ei.value.args[0] == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"
            ch2 = await conn.channel()
            await ch2.declare_queue(exclusive=True)

    run(main)


def test_aiopika_mandatory_unroutable_returns(amqp_url: str, names: Any) -> None:
    """mandatory + unroutable: basic.return before the ack; with on_return_raises the
    publish raises DeliveryError carrying the returned message (312 NO_ROUTE)."""
    xname = names.exchange()

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(on_return_raises=True)
            x = await ch.declare_exchange(xname, aio_pika.ExchangeType.DIRECT)
            with pytest.raises(aio_pika.exceptions.DeliveryError) as ei:
                await x.publish(aio_pika.Message(body=b"x"), routing_key="nowhere",
                                mandatory=True)
            returned = ei.value.message
            assert returned is not None and returned.body == b"x"
            # not mandatory: silently dropped, still acked
            ch2 = await conn.channel()
            x2 = await ch2.get_exchange(xname)
            confirm = await x2.publish(aio_pika.Message(body=b"y"), routing_key="nowhere",
                                       mandatory=False)
            assert isinstance(confirm, aiormq.spec.Basic.Ack)

    run(main)


def test_aiopika_transactions(amqp_url: str, names: Any) -> None:
    qname = names.queue()

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(qname)
            async with ch.transaction():
                for i in range(3):
                    await ch.default_exchange.publish(aio_pika.Message(body=b"%d" % i), qname)
                # not visible before commit
                assert (await depth(ch, qname))[0] == 0
            assert (await depth(ch, qname))[0] == 3

            tx = ch.transaction()
            await tx.select()
            await ch.default_exchange.publish(aio_pika.Message(body=b"rolled back"), qname)
            await tx.rollback()
            assert (await depth(ch, qname))[0] == 3

            # acks inside a transaction take effect at commit; a rolled-back ack is discarded
            # (the message stays unacked and is requeued when the channel closes)
            m = await q.get(no_ack=False, timeout=WAIT)
            await m.ack()
            await tx.rollback()
            m2 = await q.get(no_ack=False, timeout=WAIT)
            await m2.ack()
            await tx.commit()
            await ch.close()
            ch = await conn.channel()
            assert (await depth(ch, qname))[0] == 2  # m requeued, m2 gone
            q = await ch.get_queue(qname)
            bodies = []
            for _ in range(2):
                msg = await q.get(no_ack=True, timeout=WAIT)
                bodies.append((msg.body, msg.redelivered))
            assert bodies == [(m.body, True), (b"2", False)]
            # aio-pika itself refuses a transaction on a confirm-mode channel
            confirm_ch = await conn.channel()
            with pytest.raises(RuntimeError):
                confirm_ch.transaction()

    run(main)


def test_aiopika_exchange_to_exchange_binding(amqp_url: str, names: Any) -> None:
    src, dst, qname = names.exchange("src"), names.exchange("dst"), names.queue()

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            xs = await ch.declare_exchange(src, aio_pika.ExchangeType.TOPIC)
            xd = await ch.declare_exchange(dst, aio_pika.ExchangeType.FANOUT)
            await xd.bind(xs, routing_key="a.*")
            q = await ch.declare_queue(qname)
            await q.bind(xd)
            await xs.publish(aio_pika.Message(body=b"routed"), routing_key="a.b")
            await xs.publish(aio_pika.Message(body=b"dropped"), routing_key="b.a")
            m = await q.get(timeout=WAIT)
            assert m.body == b"routed"
            await m.ack()
            assert await q.get(fail=False) is None
            await xd.unbind(xs, routing_key="a.*")

    run(main)


def test_aiopika_product_detection(amqp_url: str) -> None:
    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            props = conn.transport.connection.server_properties
            product = props["product"]
            assert (product == "RabbitMQ") == is_rabbitmq(amqp_url)
            caps = props["capabilities"]
            assert caps["publisher_confirms"] is True

    run(main)


def test_aiopika_exclusive_queue_locked_from_other_connection(amqp_url: str) -> None:
    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as c1, \
                await aio_pika.connect(amqp_url) as c2:
            ch1 = await c1.channel()
            q = await ch1.declare_queue(f"interop.aiopika.excl.{uuid.uuid4().hex}",
                                        exclusive=True)
            ch2 = await c2.channel()
            with pytest.raises(aiormq.exceptions.ChannelLockedResource) as ei:
                await ch2.declare_queue(q.name, passive=True)
            print(ei.value.args[0])
            assert ei.value.args[0].startswith("RESOURCE_LOCKED - cannot obtain exclusive "
                                               f"access to locked queue '{q.name}' in vhost '/'")

    run(main)
