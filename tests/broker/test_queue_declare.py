"""queue.declare / delete / purge rules and x-argument validation (oracle-checked texts)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from amqpd.broker.vhost import VirtualHost
from amqpd.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from amqpd.protocol.fieldtable import Int64

A, B = object(), object()  # two connections

LOCKED = (
    "cannot obtain exclusive access to locked queue 'pqe' in vhost '/'. It could be "
    "originally declared on another connection or the exclusive property value does not "
    "match that of the original declaration."
)


def test_declare_and_passive(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("q", owner=A)
    assert vhost.declare_queue("q", owner=A) is q
    assert vhost.declare_queue("q", passive=True, owner=B) is q
    with pytest.raises(NotFound) as info:
        vhost.declare_queue("nope", passive=True, owner=A)
    assert info.value.reply_text == "NOT_FOUND - no queue 'nope' in vhost '/'"


def test_server_named(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("", owner=A)
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", q.name)
    assert vhost.declare_queue(q.name, passive=True, owner=A) is q
    # a non-passive redeclare by name hits the reserved prefix, as in RabbitMQ
    with pytest.raises(AccessRefused) as info:
        vhost.declare_queue(q.name, owner=A)
    assert info.value.detail == f"queue name '{q.name}' contains reserved prefix 'amq.*'"


def test_reserved_prefix(vhost: VirtualHost) -> None:
    with pytest.raises(AccessRefused) as info:
        vhost.declare_queue("amq.foo", owner=A)
    assert info.value.reply_text == (
        "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'"
    )
    with pytest.raises(NotFound):
        vhost.declare_queue("amq.foo", passive=True, owner=A)
    with pytest.raises(AccessRefused):  # stripped first, then checked
        vhost.declare_queue("\namq.x", owner=A)


def test_cr_lf_stripped(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("pq\r\nzz", owner=A)
    assert q.name == "pqzz"


@pytest.mark.parametrize(
    ("field", "first", "second", "text"),
    [
        ("durable", {}, {"durable": True}, "received 'true' but current is 'false'"),
        ("auto_delete", {}, {"auto_delete": True}, "received 'true' but current is 'false'"),
        ("durable", {"durable": True}, {}, "received 'false' but current is 'true'"),
    ],
)
def test_inequivalent_flags(
    vhost: VirtualHost, field: str, first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    vhost.declare_queue("pq", owner=A, **first)
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pq", owner=A, **second)
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg '{field}' for queue 'pq' in vhost '/': {text}"
    )


def test_inequivalent_args(vhost: VirtualHost) -> None:
    vhost.declare_queue("pq", owner=A)
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pq", owner=A, arguments={"x-message-ttl": 1000})
    assert info.value.detail == (
        "inequivalent arg 'x-message-ttl' for queue 'pq' in vhost '/': "
        "received the value '1000' of type 'signedint' but current is none"
    )
    vhost.declare_queue("pt", owner=A, arguments={"x-message-ttl": 1000})
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pt", owner=A, arguments={"x-message-ttl": 2000})
    assert info.value.detail == (
        "inequivalent arg 'x-message-ttl' for queue 'pt' in vhost '/': "
        "received '2000' but current is '1000'"
    )
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pt", owner=A)
    assert info.value.detail == (
        "inequivalent arg 'x-message-ttl' for queue 'pt' in vhost '/': "
        "received none but current is the value '1000' of type 'signedint'"
    )
    # ints compare by value across widths; a long is named 'long'
    vhost.declare_queue("pt", owner=A, arguments={"x-message-ttl": Int64(1000)})


def test_unknown_args_ignored_and_classic_is_default(vhost: VirtualHost) -> None:
    vhost.declare_queue("pq", owner=A)
    vhost.declare_queue("pq", owner=A, arguments={"x-foo": 1, "bar": "baz"})
    vhost.declare_queue("pq", owner=A, arguments={"x-queue-type": "classic"})
    # args another queue type lists are not compared on a classic queue
    vhost.declare_queue("pq", owner=A, arguments={"x-delivery-limit": 5})
    vhost.declare_queue("pc", owner=A, arguments={"x-queue-type": "classic"})
    vhost.declare_queue("pc", owner=A)


def test_quorum_queue(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("pqq", durable=True, owner=A, arguments={"x-queue-type": "quorum"})
    assert q.durable and q.queue_type == "quorum"
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pqq", durable=True, owner=A)
    assert info.value.detail == (
        "inequivalent arg 'x-queue-type' for queue 'pqq' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'"
    )
    # x-max-priority is not a quorum arg: not compared on redeclare
    vhost.declare_queue(
        "pqq", durable=True, owner=A, arguments={"x-queue-type": "quorum", "x-max-priority": 5}
    )


@pytest.mark.parametrize(
    ("kwargs", "prop"),
    [
        ({}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
        ({"exclusive": True, "auto_delete": True, "durable": True}, "auto-delete"),
        ({"auto_delete": True}, "auto-delete"),
    ],
)
def test_quorum_properties(vhost: VirtualHost, kwargs: dict[str, Any], prop: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pqq", owner=A, arguments={"x-queue-type": "quorum"}, **kwargs)
    assert info.value.detail == f"invalid property '{prop}' for queue 'pqq' in vhost '/'"


def test_stream_must_be_durable(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pst", owner=A, arguments={"x-queue-type": "stream"})
    assert info.value.detail == "invalid property 'non-durable' for queue 'pst' in vhost '/'"


def test_server_named_quorum_refused(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("", durable=True, owner=A, arguments={"x-queue-type": "quorum"})
    assert info.value.detail == "Cannot declare a server-named queue for type rabbit_quorum_queue"


INVALID_ARGS: list[tuple[str, object, str]] = [
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -1, "{value_negative,-1}"),
    ("x-expires", "a", '"expected integer, got longstr"'),
    ("x-expires", 315360000001, "{value_too_large,315360000001}"),
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "a", '"expected integer, got longstr"'),
    ("x-message-ttl", 315360000001, "{value_too_large,315360000001}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", "a", '"expected integer, got longstr"'),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-max-priority", "a", '"expected integer, got longstr"'),
    ("x-overflow", "foo", "invalid_overflow"),
    ("x-overflow", 1, "{unacceptable_type,signedint}"),
    ("x-dead-letter-routing-key", 1, "{unacceptable_type,signedint}"),
    ("x-dead-letter-routing-key", "k", "routing_key_but_no_dlx_defined"),
    ("x-queue-mode", "foo", "\"unsupported queue mode 'foo'\""),
    ("x-queue-mode", 1, "{unacceptable_type,signedint}"),
    ("x-queue-type", "foo", "\"unsupported queue type 'foo'\""),
    ("x-queue-type", 1, "{unacceptable_type,signedint}"),
    ("x-single-active-consumer", 1, "{unacceptable_type,signedint}"),
    ("x-single-active-consumer", "true", "{unacceptable_type,longstr}"),
    ("x-queue-version", 3, "\"unsupported queue version '3'\""),
    ("x-queue-version", "a", '"expected integer, got longstr"'),
]


@pytest.mark.parametrize(("key", "value", "term"), INVALID_ARGS)
def test_invalid_queue_args(vhost: VirtualHost, key: str, value: object, term: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pnew", owner=A, arguments={key: value})
    assert info.value.detail == f"invalid arg '{key}' for queue 'pnew' in vhost '/': {term}"
    assert "pnew" not in vhost.queues


def test_invalid_arg_is_not_checked_on_existing_queue(vhost: VirtualHost) -> None:
    # an existing queue is compared, not validated (oracle: "inequivalent", not "invalid")
    vhost.declare_queue("pq", owner=A)
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pq", owner=A, arguments={"x-expires": 0})
    assert info.value.detail.startswith("inequivalent arg 'x-expires'")


def test_dlx_type_checked_first(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("pz5", owner=A, arguments={"x-expires": 0, "x-dead-letter-exchange": 1})
    assert info.value.detail == (
        "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'pz5' in vhost '/'"
    )


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            {"x-delivery-limit": 5},
            "invalid arg 'x-delivery-limit' for queue 'p' in vhost '/' of queue type "
            "rabbit_classic_queue",
        ),
        (
            {"x-max-age": "1D"},
            "invalid arg 'x-max-age' for queue 'p' in vhost '/' of queue type rabbit_classic_queue",
        ),
        # value checks come before the queue-type check
        (
            {"x-delivery-limit": 5, "x-expires": 0},
            "invalid arg 'x-expires' for queue 'p' in vhost '/': {value_zero,0}",
        ),
        (
            {"x-queue-type": "quorum", "x-max-priority": 5},
            "invalid arg 'x-max-priority' for queue 'p' in vhost '/' of queue type "
            "rabbit_quorum_queue",
        ),
    ],
)
def test_args_of_other_queue_types(vhost: VirtualHost, args: dict[str, Any], text: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("p", owner=A, arguments=args)
    assert info.value.detail == text


def test_valid_args_accepted(vhost: VirtualHost) -> None:
    q = vhost.declare_queue(
        "p",
        owner=A,
        arguments={
            "x-expires": 1,
            "x-message-ttl": 0,
            "x-max-length": 0,
            "x-max-length-bytes": 10,
            "x-max-priority": 255,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "dlx",
            "x-dead-letter-routing-key": "k",
            "x-queue-mode": "lazy",
            "x-queue-version": 2,
            "x-single-active-consumer": True,
            "x-queue-type": "classic",
        },
    )
    assert q.arguments["x-max-priority"] == 255


def test_exclusive_rules(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("pqe", exclusive=True, owner=A)
    assert q.exclusive_owner is A
    for call in (
        lambda: vhost.declare_queue("pqe", passive=True, owner=B),
        lambda: vhost.declare_queue("pqe", exclusive=True, owner=B),
        lambda: vhost.declare_queue("pqe", owner=B),
        lambda: vhost.declare_queue("pqe", owner=A),  # strict: exclusive flag must match
        lambda: vhost.bind_queue("pqe", "amq.direct", "k", owner=B),
        lambda: vhost.delete_queue("pqe", owner=B),
        lambda: vhost.purge_queue("pqe", owner=B),
        lambda: vhost.get_queue("pqe", owner=B),
    ):
        with pytest.raises(ResourceLocked) as info:
            call()
        assert info.value.reply_text == f"RESOURCE_LOCKED - {LOCKED}"
    assert vhost.declare_queue("pqe", passive=True, owner=A) is q
    assert vhost.declare_queue("pqe", exclusive=True, owner=A) is q
    # unbind of a missing binding is fine from anyone
    vhost.unbind_queue("pqe", "amq.direct", "k", owner=B)
    # a non-exclusive queue cannot be redeclared exclusive
    vhost.declare_queue("pq", owner=A)
    with pytest.raises(ResourceLocked):
        vhost.declare_queue("pq", exclusive=True, owner=A)


def test_durable_exclusive_is_transient(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("pde", durable=True, exclusive=True, owner=A)
    assert not q.durable
    vhost.declare_queue("pde", durable=False, exclusive=True, owner=A)
    vhost.declare_queue("pde", durable=True, exclusive=True, owner=A)


def test_connection_closed_deletes_exclusive_queues(
    vhost: VirtualHost, consumer_factory: Any
) -> None:
    q = vhost.declare_queue("e1", exclusive=True, owner=A)
    vhost.declare_queue("e2", exclusive=True, owner=B)
    vhost.declare_queue("shared", owner=A)
    vhost.bind_queue("e1", "amq.fanout", "", owner=A)
    c = consumer_factory()
    q.add_consumer(c)
    vhost.connection_closed(A)
    assert set(vhost.queues) == {"e2", "shared"}
    assert q.deleted and c.cancelled == [q]
    assert not vhost.exchanges["amq.fanout"].impl.has_bindings()
    vhost.connection_closed(A)  # nothing left: no-op


def test_delete_queue(vhost: VirtualHost, msg: Any, consumer_factory: Any) -> None:
    assert vhost.delete_queue("missing", owner=A) == 0
    q = vhost.declare_queue("pq", owner=A)
    q.enqueue(msg(b"1"))
    q.enqueue(msg(b"2"))
    c = consumer_factory(credit=0)
    q.add_consumer(c)
    with pytest.raises(PreconditionFailed) as info:
        vhost.delete_queue("pq", if_unused=True, owner=A)
    assert info.value.reply_text == "PRECONDITION_FAILED - queue 'pq' in vhost '/' in use"
    with pytest.raises(PreconditionFailed) as info:
        vhost.delete_queue("pq", if_empty=True, owner=A)
    assert info.value.detail == "queue 'pq' in vhost '/' not empty"
    assert vhost.delete_queue("pq", owner=A) == 2
    assert c.cancelled == [q]
    assert "pq" not in vhost.queues


def test_delete_if_empty_ignores_unacked(vhost: VirtualHost, msg: Any) -> None:
    q = vhost.declare_queue("pq3", owner=A)
    q.enqueue(msg())
    assert q.get() is not None
    assert vhost.delete_queue("pq3", if_empty=True, owner=A) == 0


def test_purge(vhost: VirtualHost, msg: Any) -> None:
    q = vhost.declare_queue("pq", owner=A)
    for _ in range(3):
        q.enqueue(msg())
    got = q.get()
    assert got is not None
    assert vhost.purge_queue("pq", owner=A) == 2
    assert q.message_count == 0 and q.unacked_count == 1
    with pytest.raises(NotFound):
        vhost.purge_queue("nope", owner=A)


def test_auto_delete_queue(vhost: VirtualHost, consumer_factory: Any) -> None:
    q = vhost.declare_queue("ad", auto_delete=True, owner=A)
    c1, c2 = consumer_factory("1"), consumer_factory("2")
    q.add_consumer(c1)
    q.add_consumer(c2)
    q.remove_consumer(c1)
    assert "ad" in vhost.queues
    q.remove_consumer(c2)
    assert "ad" not in vhost.queues and q.deleted
    assert c2.cancelled == []  # the consumer that left is not told


def test_auto_delete_queue_never_consumed_stays(vhost: VirtualHost) -> None:
    q = vhost.declare_queue("ad", auto_delete=True, owner=A)
    assert q.get() is None
    assert "ad" in vhost.queues


def test_statistics(vhost: VirtualHost, msg: Any) -> None:
    q = vhost.declare_queue("s", owner=A)
    q.enqueue(msg())
    q.enqueue(msg())
    q.get()
    stats = q.statistics()
    assert (stats.messages_ready, stats.messages_unacknowledged, stats.consumers) == (1, 1, 0)
    vs = vhost.statistics()
    assert vs.queues == 1 and vs.messages_ready == 1 and vs.exchanges == 7


def test_other_types_args_are_not_value_checked(vhost: VirtualHost) -> None:
    # rabbit_amqqueue:check_declare_arguments/2 (3.13): only the type's own args are
    # validated, so a bad x-max-priority on a quorum queue is reported as foreign.
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue(
            "p", durable=True, owner=A, arguments={"x-queue-type": "quorum", "x-max-priority": "a"}
        )
    assert info.value.detail == (
        "invalid arg 'x-max-priority' for queue 'p' in vhost '/' of queue type rabbit_quorum_queue"
    )


@pytest.mark.parametrize(
    ("key", "value", "term"),
    [
        ("x-delivery-limit", -1, None),  # not validated at declare by RabbitMQ
        ("x-dead-letter-strategy", "x", "invalid_dlx_strategy"),
        ("x-queue-leader-locator", "x", "invalid_queue_locator_arg"),
        ("x-quorum-initial-group-size", 0, "{value_zero,0}"),
    ],
)
def test_quorum_arg_validation(vhost: VirtualHost, key: str, value: object, term: str) -> None:
    args = {"x-queue-type": "quorum", key: value}
    if term is None:
        vhost.declare_queue("p", durable=True, owner=A, arguments=args)
        return
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("p", durable=True, owner=A, arguments=args)
    assert info.value.detail == f"invalid arg '{key}' for queue 'p' in vhost '/': {term}"


@pytest.mark.parametrize(
    ("value", "ok"), [("1D", True), ("10s", True), ("0D", False), ("D", False), ("1x", False)]
)
def test_stream_max_age(vhost: VirtualHost, value: str, ok: bool) -> None:
    args = {"x-queue-type": "stream", "x-max-age": value}
    if ok:
        vhost.declare_queue("s", durable=True, owner=A, arguments=args)
        return
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("s", durable=True, owner=A, arguments=args)
    assert (
        info.value.detail == "invalid arg 'x-max-age' for queue 's' in vhost '/': invalid_max_age"
    )


def test_queue_version_negative(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("p", owner=A, arguments={"x-queue-version": -1})
    assert info.value.detail.endswith(": {value_negative,-1}")


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        (
            {"x-message-ttl": 1000},
            {"x-message-ttl": "1000"},
            "received '1000' but current is '1000'",
        ),
        (
            {"x-message-ttl": 1000},
            {"x-message-ttl": 2**40},
            "received '1099511627776' but current is '1000'",
        ),
        (
            {"x-dead-letter-exchange": "a"},
            {"x-dead-letter-exchange": "b"},
            "received 'b' but current is 'a'",
        ),
        (
            {"x-single-active-consumer": True},
            {"x-single-active-consumer": False},
            "received 'false' but current is 'true'",
        ),
        (
            {"x-single-active-consumer": True},
            {},
            "received none but current is the value 'true' of type 'bool'",
        ),
    ],
)
def test_inequivalent_arg_texts(
    vhost: VirtualHost, first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    vhost.declare_queue("p", owner=A, arguments=first)
    key = next(iter(first))
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_queue("p", owner=A, arguments=second)
    assert info.value.detail == f"inequivalent arg '{key}' for queue 'p' in vhost '/': {text}"


def test_consume_get_purge_do_not_strip_cr_lf(vhost: VirtualHost) -> None:
    vhost.declare_queue("pcr", owner=A)
    for call in (
        lambda: vhost.get_queue("pc\nr", owner=A),
        lambda: vhost.purge_queue("pc\nr", owner=A),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.detail == "no queue 'pc\nr' in vhost '/'"
    assert vhost.delete_queue("pc\nr", owner=A) == 0  # delete strips
    assert "pcr" not in vhost.queues
