"""exchange.declare / exchange.delete rules, texts as RabbitMQ gives them (oracle-checked)."""

from __future__ import annotations

import pytest

from amqpd.broker.vhost import VirtualHost
from amqpd.errors import AccessRefused, NotFound, PreconditionFailed
from amqpd.protocol.fieldtable import Int16, Int64


def test_predeclared_exchanges(vhost: VirtualHost) -> None:
    # `rabbitmqctl list_exchanges name type` on a fresh RabbitMQ.
    assert {n: x.type for n, x in vhost.exchanges.items()} == {
        "": "direct",
        "amq.direct": "direct",
        "amq.fanout": "fanout",
        "amq.topic": "topic",
        "amq.headers": "headers",
        "amq.match": "headers",
        "amq.rabbitmq.trace": "topic",
    }
    assert all(x.durable for x in vhost.exchanges.values())


def test_declare_and_redeclare(vhost: VirtualHost) -> None:
    x = vhost.declare_exchange("x", "topic")
    assert vhost.declare_exchange("x", "topic") is x
    assert vhost.declare_exchange("x", "topic", passive=True) is x
    # passive ignores the other fields, the type included
    assert vhost.declare_exchange("x", "nonsense", passive=True, durable=True) is x


@pytest.mark.parametrize(
    ("field", "kwargs", "text"),
    [
        ("type", {"type": "fanout"}, "received 'fanout' but current is 'direct'"),
        ("durable", {"durable": True}, "received 'true' but current is 'false'"),
        ("auto_delete", {"auto_delete": True}, "received 'true' but current is 'false'"),
        ("internal", {"internal": True}, "received 'true' but current is 'false'"),
    ],
)
def test_inequivalent_flags(
    vhost: VirtualHost, field: str, kwargs: dict[str, object], text: str
) -> None:
    vhost.declare_exchange("px", "direct")
    args: dict[str, object] = {"type": "direct", **kwargs}
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("px", **args)  # type: ignore[arg-type]
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg '{field}' for exchange 'px' in vhost '/': {text}"
    )


def test_alternate_exchange_is_the_only_compared_arg(vhost: VirtualHost) -> None:
    vhost.declare_exchange("px", "direct")
    vhost.declare_exchange("px", "direct", arguments={"foo": "bar"})  # other args ignored
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("px", "direct", arguments={"alternate-exchange": "foo"})
    assert info.value.detail == (
        "inequivalent arg 'alternate-exchange' for exchange 'px' in vhost '/': "
        "received the value 'foo' of type 'longstr' but current is none"
    )


def test_alternate_exchange_must_be_longstr(vhost: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("pae", "direct", arguments={"alternate-exchange": 1})
    assert info.value.detail == (
        "invalid type 'signedint' for arg 'alternate-exchange' in exchange 'pae' in vhost '/'"
    )
    assert "pae" not in vhost.exchanges


def test_unknown_type_is_406(vhost: VirtualHost) -> None:
    # 3.13.3+: 406 (3.10's 503 COMMAND_INVALID is the older behaviour).
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("x", "x-random")
    assert info.value.detail == "unknown exchange type 'x-random'"


def test_reserved_prefix(vhost: VirtualHost) -> None:
    with pytest.raises(AccessRefused) as info:
        vhost.declare_exchange("amq.foo", "direct")
    assert info.value.reply_text == (
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"
    )
    with pytest.raises(NotFound) as nf:
        vhost.declare_exchange("amq.foo", "direct", passive=True)
    assert nf.value.detail == "no exchange 'amq.foo' in vhost '/'"


def test_redeclare_predeclared_amq_exchange(vhost: VirtualHost) -> None:
    # Existing amq.* exchanges may be redeclared equivalently (they are durable).
    vhost.declare_exchange("amq.direct", "direct", durable=True)
    with pytest.raises(PreconditionFailed) as info:
        vhost.declare_exchange("amq.direct", "direct")
    assert info.value.detail == (
        "inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': "
        "received 'false' but current is 'true'"
    )


@pytest.mark.parametrize("passive", [False, True])
def test_default_exchange_cannot_be_declared(vhost: VirtualHost, passive: bool) -> None:
    with pytest.raises(AccessRefused) as info:
        vhost.declare_exchange("", "direct", passive=passive)
    assert info.value.detail == "operation not permitted on the default exchange"


def test_passive_missing(vhost: VirtualHost) -> None:
    with pytest.raises(NotFound) as info:
        vhost.declare_exchange("nope", "direct", passive=True)
    assert info.value.reply_text == "NOT_FOUND - no exchange 'nope' in vhost '/'"


def test_cr_lf_stripped(vhost: VirtualHost) -> None:
    x = vhost.declare_exchange("px\nx2", "direct")
    assert x.name == "pxx2"
    assert vhost.declare_exchange("pxx2", "direct", passive=True) is x


def test_delete(vhost: VirtualHost) -> None:
    vhost.declare_exchange("x", "direct")
    vhost.delete_exchange("x")
    assert "x" not in vhost.exchanges
    vhost.delete_exchange("x")  # idempotent


def test_delete_default_and_system(vhost: VirtualHost) -> None:
    with pytest.raises(AccessRefused) as info:
        vhost.delete_exchange("")
    assert info.value.detail == "operation not permitted on the default exchange"
    for name in ("amq.direct", "amq.nope"):  # checked by name, even when missing
        with pytest.raises(AccessRefused) as info:
            vhost.delete_exchange(name)
        assert info.value.detail == f"deletion of system exchange '{name}' in vhost '/' not allowed"


def test_delete_if_unused(vhost: VirtualHost) -> None:
    vhost.declare_exchange("pxu", "direct")
    vhost.declare_queue("q")
    vhost.bind_queue("q", "pxu", "k")
    with pytest.raises(PreconditionFailed) as info:
        vhost.delete_exchange("pxu", if_unused=True)
    assert info.value.detail == "exchange 'pxu' in vhost '/' in use"
    # bindings *to* an exchange do not make it "in use"
    vhost.declare_exchange("pxu2", "direct")
    vhost.bind_exchange("pxu2", "amq.direct", "k")
    vhost.delete_exchange("pxu2", if_unused=True)
    assert not vhost.exchanges["amq.direct"].impl.has_bindings()


def test_ints_compare_by_value_in_arg_equivalence(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", arguments={"x-message-ttl": Int16(1000)})
    vhost.declare_queue("q", arguments={"x-message-ttl": Int64(1000)})
    vhost.declare_queue("q", arguments={"x-message-ttl": 1000})
