"""aio-pika: replaying a stream queue from the start (passes on the oracle).

The usual aio-pika stream consumer: a durable ``x-queue-type: stream`` queue, per-consumer
qos, ``x-stream-offset`` "first", manual acks. Two consumers read the same history
independently, each delivery carrying its ``x-stream-offset`` header. A plain function that
drives its own asyncio loop (see test_aiopika.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika

WAIT = 5.0


def test_aiopika_two_consumers_replay_a_stream(amqp_url: str, names: Any) -> None:
    name = names.queue("stream")

    async def read_all(ch: aio_pika.abc.AbstractChannel, n: int) -> list[tuple[int, bytes]]:
        q = await ch.get_queue(name, ensure=False)
        got: list[tuple[int, bytes]] = []
        async with q.iterator(arguments={"x-stream-offset": "first"}) as it:
            async for message in it:
                got.append((int(message.headers["x-stream-offset"]), message.body))  # type: ignore[call-overload]
                await message.ack()
                if len(got) == n:
                    break
        return got

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})
            for i in range(3):
                await ch.default_exchange.publish(aio_pika.Message(body=b"e%d" % i), name)
            readers = []
            for _ in range(2):
                rch = await conn.channel()
                await rch.set_qos(prefetch_count=2)
                readers.append(read_all(rch, 3))
            results = await asyncio.wait_for(asyncio.gather(*readers), WAIT)
            expected = [(0, b"e0"), (1, b"e1"), (2, b"e2")]
            assert results == [expected, expected]

    asyncio.run(main())
