"""aio-pika: the delayed-retry pattern built on dead-lettering and TTL (passes on the oracle).

A work queue dead-letters rejected messages into a wait queue whose x-message-ttl sends them
back: the loop contains a rejection, so it is not a dead-letter cycle, and x-death counts
each round. Plain functions that drive their own asyncio loop (see test_aiopika.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika

WAIT = 5.0


def test_aiopika_retry_loop_through_a_wait_queue(amqp_url: str, names: Any) -> None:
    work, wait = names.queue("work"), names.queue("wait")

    async def main() -> None:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(
                work,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": wait},
            )
            await ch.declare_queue(
                wait,
                arguments={
                    "x-message-ttl": 30,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": work,
                },
            )
            await ch.default_exchange.publish(aio_pika.Message(body=b"job"), work)
            deaths: list[Any] = []
            async with q.iterator() as it:
                async for message in it:
                    deaths.append((message.headers or {}).get("x-death"))
                    if len(deaths) < 3:
                        await message.reject(requeue=False)
                    else:
                        await message.ack()
                        break
            assert deaths[0] is None
            counts = [{(d["queue"], d["reason"]): d["count"] for d in x} for x in deaths[1:]]
            assert counts == [
                {(wait, "expired"): 1, (work, "rejected"): 1},
                {(wait, "expired"): 2, (work, "rejected"): 2},
            ]
            # Most recent first: the expiry from the wait queue brought it back.
            assert [d["queue"] for d in deaths[2]] == [wait, work]

    asyncio.run(asyncio.wait_for(main(), 20))
