"""Channel semantics against a real Broker, asserting the exact frames sent.

Expected behaviour is RabbitMQ's (3.13), checked on the oracle where the test says so."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.errors import AMQPError
from amqpd.protocol import methods as M
from amqpd.protocol.assembler import Command
from amqpd.protocol.properties import BasicProperties
from amqpd.session.channel import Channel

from .fakes_channel import FakeConnection


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection()


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    return conn.open(1)


def declare(conn: FakeConnection, ch: Channel, name: str = "q", **kw: object) -> str:
    conn.call(ch, M.QueueDeclare(queue=name, **kw))  # type: ignore[arg-type]
    (ok,) = conn.methods()
    assert isinstance(ok, M.QueueDeclareOk)
    return ok.queue


def publish(
    conn: FakeConnection,
    ch: Channel,
    rk: str,
    body: bytes = b"x",
    *,
    exchange: str = "",
    mandatory: bool = False,
    props: BasicProperties | None = None,
    flush: bool = True,
) -> None:
    conn.call(
        ch,
        M.BasicPublish(exchange=exchange, routing_key=rk, mandatory=mandatory),
        props or BasicProperties(),
        body,
        flush=flush,
    )


def consume(conn: FakeConnection, ch: Channel, queue: str, tag: str = "", **kw: object) -> str:
    conn.call(ch, M.BasicConsume(queue=queue, consumer_tag=tag, **kw))  # type: ignore[arg-type]
    first, *rest = conn.take()
    assert isinstance(first.method, M.BasicConsumeOk)
    conn.unread(rest)
    return first.method.consumer_tag


def f(cmd: Command, name: str) -> Any:
    """A field of the command's method (whatever its class)."""
    return getattr(cmd.method, name)


def deliveries(conn: FakeConnection) -> list[tuple[int, bool, bytes]]:
    out = []
    for c in conn.take():
        assert isinstance(c.method, M.BasicDeliver), c.method
        out.append((c.method.delivery_tag, c.method.redelivered, c.body or b""))
    return out


def fill(conn: FakeConnection, ch: Channel, queue: str, n: int) -> None:
    for i in range(n):
        publish(conn, ch, queue, b"m%d" % i)
    assert conn.take() == []


# -- exchange / queue ------------------------------------------------------------------------


def test_server_named_queue_and_last_queue_shortcuts(conn: FakeConnection, ch: Channel) -> None:
    name = declare(conn, ch, "")
    assert name.startswith("amq.gen-")
    conn.call(ch, M.QueueBind(queue="", exchange="amq.direct", routing_key=""))
    assert conn.methods() == [M.QueueBindOk()]
    publish(conn, ch, name, exchange="amq.direct")  # routing key = queue name (shortcut)
    conn.call(ch, M.QueuePurge(queue=""))
    assert conn.methods() == [M.QueuePurgeOk(message_count=1)]
    conn.call(ch, M.QueueDelete(queue=""))
    assert conn.methods() == [M.QueueDeleteOk(message_count=0)]


def test_no_previously_declared_queue(conn: FakeConnection, ch: Channel) -> None:
    # Oracle: 404 "NOT_FOUND - no previously declared queue".
    exc = conn.fails(ch, M.BasicConsume(queue=""))
    assert (exc.reply_code, exc.hard) == (404, False)
    assert exc.reply_text == "NOT_FOUND - no previously declared queue"
    assert (exc.class_id, exc.method_id) == (60, 20)


def test_passive_declare_of_empty_name(conn: FakeConnection, ch: Channel) -> None:
    exc = conn.fails(ch, M.QueueDeclare(queue="", passive=True))
    assert exc.reply_text == "NOT_FOUND - no queue '' in vhost '/'"


def test_declare_ok_counts_and_no_wait(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "q")
    fill(conn, ch, "q", 2)
    conn.call(ch, M.QueueDeclare(queue="q", passive=True))
    assert conn.methods() == [M.QueueDeclareOk(queue="q", message_count=2, consumer_count=0)]
    conn.call(ch, M.QueueDeclare(queue="q2", no_wait=True))
    assert conn.methods() == []
    conn.call(ch, M.QueuePurge(queue=""))  # no-wait declare still sets the last queue
    assert conn.methods() == [M.QueuePurgeOk(message_count=0)]


def test_exchange_methods_reply_unless_no_wait(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.ExchangeDeclare(exchange="x", type="fanout"))
    conn.call(ch, M.ExchangeDeclare(exchange="y", type="fanout", no_wait=True))
    conn.call(ch, M.ExchangeBind(destination="y", source="x"))
    conn.call(ch, M.ExchangeUnbind(destination="y", source="x"))
    conn.call(ch, M.ExchangeDelete(exchange="y"))
    assert conn.methods() == [
        M.ExchangeDeclareOk(),
        M.ExchangeBindOk(),
        M.ExchangeUnbindOk(),
        M.ExchangeDeleteOk(),
    ]


# -- consume / deliver -----------------------------------------------------------------------


def test_consume_ok_precedes_deliveries_and_tags_count_from_one(
    conn: FakeConnection, ch: Channel
) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 2)
    conn.call(ch, M.BasicConsume(queue="q", consumer_tag="c1"))
    cmds = conn.take()
    assert cmds[0].method == M.BasicConsumeOk(consumer_tag="c1")
    delivers = [c.method for c in cmds[1:]]
    assert delivers == [
        M.BasicDeliver(
            consumer_tag="c1", delivery_tag=1, redelivered=False, exchange="", routing_key="q"
        ),
        M.BasicDeliver(
            consumer_tag="c1", delivery_tag=2, redelivered=False, exchange="", routing_key="q"
        ),
    ]
    assert [c.body for c in cmds[1:]] == [b"m0", b"m1"]


def test_server_generated_consumer_tag(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    tag = consume(conn, ch, "q")
    assert tag.startswith("amq.ctag-") and len(tag) == len("amq.ctag-") + 22


def test_reused_consumer_tag_is_a_530_connection_error(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    consume(conn, ch, "q", "t1")
    exc = conn.fails(ch, M.BasicConsume(queue="q", consumer_tag="t1"))
    assert (exc.reply_code, exc.hard) == (530, True)
    assert exc.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 't1'"


def test_cancel_unknown_tag_still_answers(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.BasicCancel(consumer_tag="nope"))
    assert conn.methods() == [M.BasicCancelOk(consumer_tag="nope")]


def test_cancel_stops_deliveries(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    consume(conn, ch, "q", "c")
    conn.call(ch, M.BasicCancel(consumer_tag="c"))
    assert conn.methods() == [M.BasicCancelOk(consumer_tag="c")]
    publish(conn, ch, "q")
    assert conn.take() == []


def test_no_ack_consumer_leaves_nothing_unacked(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 3)
    consume(conn, ch, "q", no_ack=True)
    assert [t for t, _, _ in deliveries(conn)] == [1, 2, 3]
    assert len(ch.unacked) == 0
    exc = conn.fails(ch, M.BasicAck(delivery_tag=1))
    assert exc.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"


@pytest.mark.parametrize("notify", [True, False])
def test_queue_deleted_cancels_consumer(notify: bool) -> None:
    conn = FakeConnection(capabilities={"consumer_cancel_notify": notify})
    ch = conn.open(1)
    declare(conn, ch)
    consume(conn, ch, "q", "c")
    other = FakeConnection(conn.broker)
    och = other.open(1)
    other.call(och, M.QueueDelete(queue="q"))
    expected = [M.BasicCancel(consumer_tag="c", no_wait=True)] if notify else []
    assert conn.methods() == expected
    assert ch.consumers == {}


# -- qos -------------------------------------------------------------------------------------


def test_per_consumer_prefetch_applies_to_later_consumers(
    conn: FakeConnection, ch: Channel
) -> None:
    declare(conn, ch, "a")
    declare(conn, ch, "b")
    fill(conn, ch, "a", 5)
    fill(conn, ch, "b", 5)
    consume(conn, ch, "a", "unlimited")
    assert len(deliveries(conn)) == 5
    conn.call(ch, M.BasicQos(prefetch_count=2))
    assert conn.methods() == [M.BasicQosOk()]
    consume(conn, ch, "b", "limited")
    got = deliveries(conn)
    assert [t for t, _, _ in got] == [6, 7]
    conn.call(ch, M.BasicAck(delivery_tag=6))
    assert [t for t, _, _ in deliveries(conn)] == [8]


def test_global_prefetch_is_shared(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch, "a")
    declare(conn, ch, "b")
    fill(conn, ch, "a", 3)
    fill(conn, ch, "b", 3)
    conn.call(ch, M.BasicQos(prefetch_count=3, global_=True))
    conn.take()
    consume(conn, ch, "a", "ca")
    assert len(deliveries(conn)) == 3
    consume(conn, ch, "b", "cb")
    assert deliveries(conn) == []
    # Acking on queue a frees shared credit that queue b's consumer uses.
    conn.call(ch, M.BasicAck(delivery_tag=2, multiple=True))
    cmds = conn.take()
    assert [f(c, "routing_key") for c in cmds] == ["b", "b"]


def test_consumer_and_global_limits_both_apply(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 10)
    conn.call(ch, M.BasicQos(prefetch_count=3))
    conn.call(ch, M.BasicQos(prefetch_count=2, global_=True))
    conn.take()
    consume(conn, ch, "q")
    assert len(deliveries(conn)) == 2  # oracle: consumer 3 then global 2 -> 2


def test_consumer_qos_after_global_unlimits(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 10)
    conn.call(ch, M.BasicQos(prefetch_count=2, global_=True))
    conn.call(ch, M.BasicQos(prefetch_count=5))
    conn.take()
    consume(conn, ch, "q")
    assert len(deliveries(conn)) == 5  # oracle: global 2 then consumer 5 -> 5


def test_basic_get_ignores_qos(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 3)
    conn.call(ch, M.BasicQos(prefetch_count=1, global_=True))
    conn.take()
    for expected_left in (2, 1, 0):
        conn.call(ch, M.BasicGet(queue="q"))
        (ok,) = conn.methods()
        assert isinstance(ok, M.BasicGetOk) and ok.message_count == expected_left
    conn.call(ch, M.BasicGet(queue="q"))
    assert conn.methods() == [M.BasicGetEmpty()]
    assert len(ch.unacked) == 3


def test_prefetch_size_is_not_implemented(conn: FakeConnection, ch: Channel) -> None:
    exc = conn.fails(ch, M.BasicQos(prefetch_size=10))
    assert (exc.reply_code, exc.hard) == (540, True)
    assert exc.reply_text == "NOT_IMPLEMENTED - prefetch_size!=0 (10)"


# -- acks ------------------------------------------------------------------------------------


def _consume_n(conn: FakeConnection, ch: Channel, n: int) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", n)
    consume(conn, ch, "q", "c")
    assert len(deliveries(conn)) == n


def test_ack_multiple_and_tag_zero(conn: FakeConnection, ch: Channel) -> None:
    _consume_n(conn, ch, 5)
    conn.call(ch, M.BasicAck(delivery_tag=2, multiple=True))
    assert [r.tag for r in ch.unacked] == [3, 4, 5]
    conn.call(ch, M.BasicAck(delivery_tag=0, multiple=True))
    assert len(ch.unacked) == 0
    assert conn.take() == []
    conn.call(ch, M.QueueDeclare(queue="q", passive=True))
    assert conn.methods() == [M.QueueDeclareOk(queue="q", message_count=0, consumer_count=1)]


def test_unknown_tag_closes_channel_and_requeues(conn: FakeConnection, ch: Channel) -> None:
    _consume_n(conn, ch, 3)
    conn.call(ch, M.BasicAck(delivery_tag=2))
    exc = conn.fails(ch, M.BasicAck(delivery_tag=2))
    assert (exc.reply_code, exc.hard) == (406, False)
    assert exc.reply_text == "PRECONDITION_FAILED - unknown delivery tag 2"
    assert (exc.class_id, exc.method_id) == (60, 80)
    # The other channel sees 1 and 3 again, redelivered, in their original order.
    ch2 = conn.open(2)
    conn.call(ch2, M.BasicGet(queue="q"))
    conn.call(ch2, M.BasicGet(queue="q"))
    got = [(f(c, "redelivered"), c.body) for c in conn.take()]
    assert got == [(True, b"m0"), (True, b"m2")]


def test_nack_requeue_keeps_order_and_sets_redelivered(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 3)
    for _ in range(3):
        conn.call(ch, M.BasicGet(queue="q"))
    conn.take()
    conn.call(ch, M.BasicNack(delivery_tag=3, requeue=True))
    conn.call(ch, M.BasicReject(delivery_tag=1, requeue=True))
    conn.call(ch, M.BasicNack(delivery_tag=2, requeue=False))
    for _ in range(3):
        conn.call(ch, M.BasicGet(queue="q", no_ack=True))
    cmds = conn.take()
    got = [(f(c, "redelivered"), c.body) for c in cmds[:2]]
    assert got == [(True, b"m0"), (True, b"m2")]
    assert cmds[2].method == M.BasicGetEmpty()


def test_recover_requeues_everything(conn: FakeConnection, ch: Channel) -> None:
    _consume_n(conn, ch, 2)
    conn.call(ch, M.BasicRecover(requeue=True))
    cmds = conn.take()
    # Redelivered to the same consumer with fresh tags; recover-ok follows.
    assert [(f(c, "delivery_tag"), f(c, "redelivered")) for c in cmds[:2]] == [
        (3, True),
        (4, True),
    ]
    assert cmds[2].method == M.BasicRecoverOk()


def test_recover_without_requeue_is_not_implemented(conn: FakeConnection, ch: Channel) -> None:
    exc = conn.fails(ch, M.BasicRecoverAsync(requeue=False))
    assert exc.reply_text == "NOT_IMPLEMENTED - requeue=false" and exc.hard


def test_close_requeues_unacked_with_redelivered(conn: FakeConnection, ch: Channel) -> None:
    _consume_n(conn, ch, 3)
    conn.call(ch, M.BasicAck(delivery_tag=2))
    ch.on_closed()
    ch.on_closed()  # idempotent
    ch2 = conn.open(2)
    consume(conn, ch2, "q", "c2")
    assert deliveries(conn) == [(1, True, b"m0"), (2, True, b"m2")]


# -- publish / confirms ------------------------------------------------------------------------


def test_confirms_coalesce_per_flush(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    conn.call(ch, M.ConfirmSelect())
    assert conn.methods() == [M.ConfirmSelectOk()]
    for _ in range(3):
        publish(conn, ch, "q", flush=False)
    publish(conn, ch, "nowhere", flush=False)  # unroutable: confirmed too
    assert conn.take() == []
    ch.flush()
    assert conn.methods() == [M.BasicAck(delivery_tag=4, multiple=True)]
    publish(conn, ch, "q")
    assert conn.methods() == [M.BasicAck(delivery_tag=5, multiple=False)]


def test_confirm_select_no_wait(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.ConfirmSelect(nowait=True))
    assert conn.methods() == []


def test_mandatory_return_precedes_the_ack(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.ConfirmSelect(nowait=True))
    publish(conn, ch, "nowhere", b"lost", mandatory=True)
    cmds = conn.take()
    assert [c.method for c in cmds] == [
        M.BasicReturn(reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="nowhere"),
        M.BasicAck(delivery_tag=1, multiple=False),
    ]
    assert cmds[0].body == b"lost"


def test_errors_flush_pending_acks_first(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.ConfirmSelect(nowait=True))
    publish(conn, ch, "q", flush=False)
    exc = conn.fails(ch, M.BasicPublish(exchange="missing"), BasicProperties(), b"")
    assert exc.reply_code == 404
    assert conn.methods() == [M.BasicAck(delivery_tag=1, multiple=False)]


def test_immediate_is_not_implemented(conn: FakeConnection, ch: Channel) -> None:
    exc = conn.fails(ch, M.BasicPublish(routing_key="q", immediate=True), BasicProperties(), b"")
    assert (exc.reply_code, exc.hard, exc.reply_text) == (
        540,
        True,
        "NOT_IMPLEMENTED - immediate=true",
    )


@pytest.mark.parametrize(
    ("props", "text"),
    [
        (
            BasicProperties(user_id="bob"),
            "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user "
            "was 'guest'",
        ),
        (
            BasicProperties(expiration="abc"),
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        ),
        (
            BasicProperties(reply_to="amq.rabbitmq.reply-to"),
            "PRECONDITION_FAILED - fast reply consumer does not exist",
        ),
    ],
)
def test_publish_property_checks(
    conn: FakeConnection, ch: Channel, props: BasicProperties, text: str
) -> None:
    exc = conn.fails(ch, M.BasicPublish(routing_key="q"), props, b"")
    assert (exc.reply_code, exc.hard, exc.reply_text) == (406, False, text)


def test_oversized_message(conn: FakeConnection, ch: Channel) -> None:
    conn.config.max_message_size = 4
    exc = conn.fails(ch, M.BasicPublish(routing_key="q"), BasicProperties(), b"12345")
    assert exc.reply_text == (
        "PRECONDITION_FAILED - message size 5 is larger than configured max size 4"
    )


def test_user_id_of_the_user_is_fine(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    publish(conn, ch, "q", props=BasicProperties(user_id="guest", expiration="60000"))
    conn.call(ch, M.BasicGet(queue="q", no_ack=True))
    assert isinstance(conn.methods()[0], M.BasicGetOk)


# -- tx ----------------------------------------------------------------------------------------


def test_tx_commit_applies_publishes_and_acks(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 1)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.take()
    conn.call(ch, M.TxSelect())
    assert conn.methods() == [M.TxSelectOk()]
    publish(conn, ch, "q", b"t1")
    publish(conn, ch, "nowhere", b"ret", mandatory=True)
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert conn.take() == []  # nothing happens before commit, not even the return
    exc_ch = conn.open(2)
    conn.call(exc_ch, M.QueueDeclare(queue="q", passive=True))
    assert conn.methods() == [M.QueueDeclareOk(queue="q", message_count=0, consumer_count=0)]
    conn.call(ch, M.TxCommit())
    assert [c.method for c in conn.take()] == [
        M.BasicReturn(reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="nowhere"),
        M.TxCommitOk(),
    ]
    conn.call(exc_ch, M.BasicGet(queue="q", no_ack=True))
    cmds = conn.take()
    assert cmds[0].body == b"t1" and f(cmds[0], "message_count") == 0


def test_tx_rollback_drops_publishes_and_restores_acks(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 2)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.call(ch, M.BasicGet(queue="q"))
    conn.take()
    conn.call(ch, M.TxSelect())
    conn.call(ch, M.BasicAck(delivery_tag=2))
    publish(conn, ch, "q", b"dropped")
    conn.call(ch, M.TxRollback())
    assert conn.methods() == [M.TxSelectOk(), M.TxRollbackOk()]
    assert [r.tag for r in ch.unacked] == [1, 2]
    conn.call(ch, M.BasicAck(delivery_tag=2))  # acked again after rollback: fine (oracle)
    conn.call(ch, M.TxCommit())
    assert conn.methods() == [M.TxCommitOk()]
    assert [r.tag for r in ch.unacked] == [1]


def test_double_ack_inside_tx_is_unknown(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 1)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.call(ch, M.TxSelect())
    conn.call(ch, M.BasicAck(delivery_tag=1))
    exc = conn.fails(ch, M.BasicAck(delivery_tag=1))
    assert exc.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"


def test_tx_and_confirm_modes_exclude_each_other(conn: FakeConnection) -> None:
    a, b = conn.open(1), conn.open(2)
    conn.call(a, M.ConfirmSelect())
    assert conn.fails(a, M.TxSelect()).reply_text == (
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    )
    conn.call(b, M.TxSelect())
    assert conn.fails(b, M.ConfirmSelect()).reply_text == (
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    )


@pytest.mark.parametrize("method", [M.TxCommit(), M.TxRollback()])
def test_commit_without_select(conn: FakeConnection, ch: Channel, method: M.Method) -> None:
    assert conn.fails(ch, method).reply_text == "PRECONDITION_FAILED - channel is not transactional"


# -- channel.flow and invalid methods ------------------------------------------------------------


def test_flow(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.ChannelFlow(active=True))
    assert conn.methods() == [M.ChannelFlowOk(active=True)]
    exc = conn.fails(ch, M.ChannelFlow(active=False))
    assert (exc.reply_code, exc.hard, exc.reply_text) == (
        540,
        True,
        "NOT_IMPLEMENTED - active=false",
    )


@pytest.mark.parametrize(
    "method",
    [
        M.BasicDeliver(consumer_tag="c", delivery_tag=1),
        M.BasicGetEmpty(),
        M.BasicConsumeOk(consumer_tag="c"),
        M.QueueDeclareOk(queue="q"),
        M.ChannelFlowOk(active=True),
    ],
)
def test_server_only_methods_are_command_invalid(
    conn: FakeConnection, ch: Channel, method: M.Method
) -> None:
    cmd = Command(method, b"\x00\x00", b"") if method.HAS_CONTENT else Command(method)
    with pytest.raises(AMQPError) as info:
        ch.handle(cmd, 0.0)
    exc = info.value
    assert (exc.reply_code, exc.hard, exc.reply_text) == (
        503,
        True,
        "COMMAND_INVALID - unimplemented method",
    )
    assert (exc.class_id, exc.method_id) == (method.CLASS_ID, method.METHOD_ID)


# -- direct reply-to ---------------------------------------------------------------------------


def test_direct_reply_to_round_trip() -> None:
    client = FakeConnection()
    server = FakeConnection(client.broker)
    cch, sch = client.open(1), server.open(1)
    declare(server, sch, "rpc")
    exc_text = client.fails(client.open(9), M.BasicConsume(queue="amq.rabbitmq.reply-to"))
    assert exc_text.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    tag = consume(client, cch, "amq.rabbitmq.reply-to", "rc", no_ack=True)
    assert tag == "rc"
    publish(client, cch, "rpc", b"req", props=BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    server.call(sch, M.BasicGet(queue="rpc", no_ack=True))
    (req,) = server.take()
    reply_key = BasicProperties.decode(req.properties_raw or b"").reply_to
    assert reply_key is not None and reply_key.startswith("amq.rabbitmq.reply-to.")
    server.call(sch, M.QueueDeclare(queue=reply_key, passive=True))
    assert server.methods() == [M.QueueDeclareOk(queue=reply_key, consumer_count=1)]
    # Mandatory replies are returned although delivered (RabbitMQ 3.x, oracle).
    publish(server, sch, reply_key, b"r1")
    publish(server, sch, reply_key, b"r2", mandatory=True)
    assert [f(c, "reply_code") for c in server.take()] == [312]
    got = client.take()
    assert [(f(c, "delivery_tag"), f(c, "routing_key"), c.body) for c in got] == [
        (1, reply_key, b"r1"),  # the tag is the next one, not consumed (oracle)
        (1, reply_key, b"r2"),
    ]
    exc = client.fails(cch, M.BasicConsume(queue="amq.rabbitmq.reply-to", no_ack=True))
    assert exc.reply_text == "PRECONDITION_FAILED - reply consumer already set"
    # Gone with the channel: the key no longer declares, replies are dropped.
    exc = server.fails(sch, M.QueueDeclare(queue=reply_key, passive=True))
    assert exc.reply_text == f"NOT_FOUND - no queue '{reply_key}' in vhost '/'"
    sch2 = server.open(2)
    publish(server, sch2, reply_key, b"r3")
    assert client.take() == []


def test_reply_to_pseudo_queue_declares(conn: FakeConnection, ch: Channel) -> None:
    conn.call(ch, M.QueueDeclare(queue="amq.rabbitmq.reply-to"))
    assert conn.methods() == [
        M.QueueDeclareOk(queue="amq.rabbitmq.reply-to", message_count=0, consumer_count=1)
    ]
    exc = conn.fails(ch, M.QueueDeclare(queue="amq.rabbitmq.reply-tox"))
    assert exc.reply_text == "NOT_FOUND - no queue 'amq.rabbitmq.reply-tox' in vhost '/'"


def test_reply_consumer_cancel(conn: FakeConnection, ch: Channel) -> None:
    consume(conn, ch, "amq.rabbitmq.reply-to", "rc", no_ack=True)
    assert len(conn.vhost.reply_to) == 1
    conn.call(ch, M.BasicCancel(consumer_tag="rc"))
    assert conn.methods() == [M.BasicCancelOk(consumer_tag="rc")]
    assert len(conn.vhost.reply_to) == 0


def test_own_queue_delete_answers_before_the_cancel() -> None:
    # Oracle (raw frames): queue.delete-ok, then basic.cancel to the same channel's consumer.
    conn = FakeConnection(capabilities={"consumer_cancel_notify": True})
    ch = conn.open(1)
    declare(conn, ch)
    consume(conn, ch, "q", "c")
    conn.call(ch, M.QueueDelete(queue="q"))
    assert conn.methods() == [
        M.QueueDeleteOk(message_count=0),
        M.BasicCancel(consumer_tag="c", no_wait=True),
    ]


def test_no_ack_consumer_waits_while_the_shared_limit_is_full(
    conn: FakeConnection, ch: Channel
) -> None:
    # rabbit_limiter can_send: a no-ack delivery needs the shared volume below the limit
    # but does not add to it.
    declare(conn, ch, "a")
    declare(conn, ch, "b")
    fill(conn, ch, "a", 2)
    fill(conn, ch, "b", 3)
    conn.call(ch, M.BasicQos(prefetch_count=2, global_=True))
    conn.take()
    consume(conn, ch, "a", "acking")
    assert len(deliveries(conn)) == 2
    consume(conn, ch, "b", "noack", no_ack=True)
    assert deliveries(conn) == []
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert len(deliveries(conn)) == 3  # volume stays below the limit: b drains


def test_acks_in_a_tx_give_credit_back_at_commit(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 3)
    conn.call(ch, M.BasicQos(prefetch_count=1))
    conn.call(ch, M.TxSelect())
    conn.take()
    consume(conn, ch, "q", "c")
    assert [t for t, _, _ in deliveries(conn)] == [1]
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert conn.take() == []
    conn.call(ch, M.TxCommit())
    cmds = conn.take()
    assert [c.method for c in cmds] == [
        M.BasicDeliver(consumer_tag="c", delivery_tag=2, routing_key="q"),
        M.TxCommitOk(),
    ]


def test_nack_multiple_requeues_to_the_same_consumer(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 3)
    conn.call(ch, M.BasicQos(prefetch_count=2))
    conn.take()
    consume(conn, ch, "q", "c")
    assert deliveries(conn) == [(1, False, b"m0"), (2, False, b"m1")]
    conn.call(ch, M.BasicNack(delivery_tag=0, multiple=True, requeue=True))
    assert deliveries(conn) == [(3, True, b"m0"), (4, True, b"m1")]


def test_recover_async_sends_nothing(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 1)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.take()
    conn.call(ch, M.BasicRecoverAsync(requeue=True))
    assert conn.take() == []
    assert len(ch.unacked) == 0


def test_ack_after_the_queue_was_deleted_is_fine(conn: FakeConnection, ch: Channel) -> None:
    # Oracle: get, queue.delete, ack(1) -> no error.
    declare(conn, ch)
    fill(conn, ch, "q", 1)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.call(ch, M.QueueDelete(queue="q"))
    conn.take()
    conn.call(ch, M.BasicAck(delivery_tag=1))
    assert conn.take() == []


def test_close_requeues_acks_of_an_uncommitted_tx(conn: FakeConnection, ch: Channel) -> None:
    declare(conn, ch)
    fill(conn, ch, "q", 2)
    conn.call(ch, M.BasicGet(queue="q"))
    conn.call(ch, M.BasicGet(queue="q"))
    conn.call(ch, M.TxSelect())
    conn.call(ch, M.BasicAck(delivery_tag=2, multiple=True))
    conn.take()
    ch.on_closed()
    ch2 = conn.open(2)
    conn.call(ch2, M.QueueDeclare(queue="q", passive=True))
    assert conn.methods() == [M.QueueDeclareOk(queue="q", message_count=2, consumer_count=0)]


def test_requeue_goes_back_per_consumer_group(conn: FakeConnection, ch: Channel) -> None:
    # Oracle: consumers A and B with prefetch 2 hold m0,m1 / m2,m3; nack(3, multiple)
    # requeues A's group first (A takes m0, m1), then B's (B takes m2); recover likewise.
    declare(conn, ch)
    fill(conn, ch, "q", 6)
    conn.call(ch, M.BasicQos(prefetch_count=2))
    conn.take()
    consume(conn, ch, "q", "A")
    conn.take()
    consume(conn, ch, "q", "B")
    conn.take()

    def got() -> list[tuple[str, int, bytes]]:
        return [
            (f(c, "consumer_tag"), f(c, "delivery_tag"), c.body or b"")
            for c in conn.take()
            if isinstance(c.method, M.BasicDeliver)
        ]

    conn.call(ch, M.BasicNack(delivery_tag=3, multiple=True, requeue=True))
    assert got() == [("A", 5, b"m0"), ("A", 6, b"m1"), ("B", 7, b"m2")]
    conn.call(ch, M.BasicRecover(requeue=True))
    assert got() == [("A", 8, b"m0"), ("A", 9, b"m1"), ("B", 10, b"m2"), ("B", 11, b"m3")]


def test_a_queue_refusing_the_message_nacks_the_publish(
    conn: FakeConnection, ch: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x-overflow reject-publish (reference 2.3): Queue.enqueue returns False; the publish is
    # nacked, and a refused publish is still "routed" (no basic.return).
    declare(conn, ch)
    # Until the queue implements reject-publish, stand its answer in.
    monkeypatch.setattr(conn.vhost.queues["q"], "enqueue", lambda message, now=None: False)
    conn.call(ch, M.ConfirmSelect(nowait=True))
    publish(conn, ch, "q", mandatory=True)
    assert conn.methods() == [M.BasicNack(delivery_tag=1, multiple=True, requeue=False)]
